"""The router: where each request goes (policy.py), and owning it until one outcome exists (flow.py).

It consumes ``orch.request.>``, holds each request message until its outcome is stored, dispatches to
``orch.dispatch.host.*`` / ``orch.dispatch.cloud.*``, falls back on typed failures and timeouts, fans out
``diverse`` and ``ensemble`` requests, and watches queue depths. Several instances may run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from nats.aio.msg import Msg

from actors.router import fanout
from actors.router.ensemble import cache_embedder
from actors.router.flow import FanOut, Flow, Pending
from actors.router.identity import admit
from actors.router.queues import QueueWatch
from actors.router.returning import plan_or_wait, returning_hosts
from actors.router.view import Link, View
from bus import subjects
from bus.actor import Actor
from bus.consumer import ConsumerSpec, Delivery
from bus.outcomes import publish_outcome
from clients.budget import BudgetClient
from clients.cache import CacheClient
from policy import validation
from policy.keys import may_use, policy_for, shape_error
from policy.routing import Snapshot, consensus_route, host_up
from schemas.codec import ATTEMPT_FAILED, OUTCOME, REQUEST, encode
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo, SchemaError
from schemas.events import Event, ValidationSkipped
from schemas.request import GenerateRequest
from schemas.result import GenerateError, Outcome

DEADLINE_SLACK_S = 5.0  # clock skew between a client and the router


class Router(Actor):
    """Routes every request: strategies, cost ladder, fallback chains, fan-out and consensus."""

    name = "router"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self.view: View
        self.link = Link()  # the router's own bus connection: liveness is judged only while it is up
        self.flow = Flow(self)
        self.budget = BudgetClient(self)
        self.flow.reserve = self.budget.reserve  # a hold before every paid attempt (drawn from a lease)
        self.cache = CacheClient(self)
        self.pairs = validation.Pairs(cfg.router.validation.agree_at)  # premium validation in flight
        self.flow.observe = self.observed
        self.background: set[asyncio.Future[Any]] = set()
        self._subs: list[Any] = []
        self.waiting_for: set[str] = set()  # hosts whose attempts stay put: they are coming back

    def consumers(self) -> list[ConsumerSpec]:
        defaults = self.consumer_defaults()
        return [
            ConsumerSpec(
                stream="REQUESTS",
                durable="router",
                subjects=(subjects.REQUEST_ALL,),
                handler=self.handle,
                concurrency=self.cfg.router.concurrency,
                on_dead_letter=self.refuse,
                description="requests, held until their outcome is stored",
                **defaults,
            )
        ]

    async def on_start(self) -> None:
        self.flow.embed = cache_embedder(self.nc, timeout=float(self.cfg.router.ensemble.embed_timeout))
        self.view = View(self.js, self.link, min_samples=self.cfg.router.validation.min_samples)
        self.flow.measured = self.view.accuracy  # premium agreement and reviews, once enough checks exist
        for name, live in self.view.views().items():
            self.spawn(f"view:{name}", live.run)
        self.spawn("overflow", self.view.overflow.run)
        await self.view.wait_ready()
        self.link.leader = await self.view.hosts_leader()
        # Every instance hears every outcome and failure: the owner of the request acts on it.
        self._subs.append(await self.nc.subscribe(subjects.RESULT_FINAL, cb=self.on_outcome))
        self._subs.append(await self.nc.subscribe(subjects.RESULT_FAILED, cb=self.on_failure))
        self.queues = QueueWatch(self)
        self.spawn("queues", self.queues.run)
        self.spawn("hosts", self.watch_hosts)
        self.spawn("leases", self.budget.sweep)

    async def on_stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for task in list(self.background):
            task.cancel()
        await self.budget.close()  # the undrawn part of its budget leases goes back

    def host_alive(self, host: str) -> bool:
        return host_up(self.cfg, self.view.snapshot_light(), host)

    def hosts_returning(self) -> set[str]:
        return returning_hosts(self.cfg, self.view.snapshot_light())

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self.link.lost()

    def on_reconnect(self) -> None:
        super().on_reconnect()
        self.link.back()

    async def watch_hosts(self) -> None:
        """Fail over attempts whose gpu_host stopped heartbeating (checked every second), judged only
        while the router itself is connected: its own bus outage is not a dead host."""
        link = self.link
        link.reconnects = self.nc.stats["reconnects"]
        while True:
            await asyncio.sleep(1.0)
            link.poll(self.nc.is_connected, self.nc.stats["reconnects"])
            if not link.connected:
                continue
            link.bucket(await self.view.hosts_leader())
            busy = {p.target.host for p in self.flow.pending.values() if p.target and p.target.host and not p.done}
            down = {h for h in busy if not self.host_alive(h)}
            if down:
                down = await self.view.confirm_stale(down, self.host_alive)
            if down:
                waiting = await self.flow.hosts_down(down)
                if waiting != self.waiting_for or waiting != down:
                    self.log.warning(
                        "gpu_host(s) %s stopped heartbeating: attempts failed over where a live target exists, "
                        "else they wait for the host to return (%s)", sorted(down), sorted(waiting) or "none",
                    )  # fmt: skip
                self.waiting_for = waiting
            else:
                self.waiting_for = set()

    # --- requests ------------------------------------------------------------------------------
    async def handle(self, d: Delivery) -> None:
        request = REQUEST.decode(d.data)  # SchemaError -> dead letter, and `refuse` answers the client
        admitted = admit(request, d.subject)  # origin and client identity from the authenticated subject
        if isinstance(admitted, ErrorInfo):
            await self.refuse(d, admitted.message)
            return
        request = admitted
        if not request.deadline:  # pinned: budget holds and workers must agree on one deadline
            request = msgspec.structs.replace(request, deadline=request.effective_deadline)
        rid = request.id
        if rid in self.flow.pending or rid in self.flow.fanouts:
            owner = self.flow.pending.get(rid) or self.flow.fanouts.get(rid)
            if owner is not None:
                owner.delivery = d.hold()  # redelivered to us while we hold it: keep the new handle
            return
        origin = request.origin
        if d.num_delivered > 1 and await self.flow.stored_outcome(rid, origin) is not None:
            return  # finished before a restart: just acknowledge
        if request.effective_deadline - time.time() > float(self.cfg.router.max_deadline) + DEADLINE_SLACK_S:
            await self.refuse(d, f"deadline too far away: at most {float(self.cfg.router.max_deadline):g}s")
            return
        if request.effective_deadline <= time.time():
            error = GenerateError(request_id=rid, error=ErrorInfo.of("timeout", "deadline passed"))
            await publish_outcome(self, error, origin)
            return
        d.hold()
        policy = policy_for(self.cfg, request.client_key)
        refused = shape_error(policy, request, self.cfg)
        if refused is not None:  # more fan-out or a longer deadline than the key may ask
            await publish_outcome(self, GenerateError(request_id=rid, error=refused, created_at=time.time()), origin)
            await d.ack()
            return
        route = consensus_route(request, self.cfg)
        if route is not None:  # primary + validators vote: the route's consensus, as an ensemble
            request = msgspec.structs.replace(
                request, mode="ensemble", requirements=msgspec.structs.replace(request.requirements, route=route)
            )
        if request.mode != "single":
            await self.start_fanout(request, d)
            return
        cached = await self.cache.lookup(request)  # None: a miss (remembered by the cache), or no cache
        # a cached answer from a model this key may not use (another key's request) is not served
        if cached is not None and may_use(policy, cached.model):
            await publish_outcome(self, cached, origin)
            await d.ack()
            return
        snap = self.view.snapshot()
        decision = plan_or_wait(request, self.cfg, snap)
        if isinstance(decision, ErrorInfo):
            await publish_outcome(self, GenerateError(request_id=rid, error=decision, created_at=time.time()), origin)
            await d.ack()
            return
        resume = await self.resume_point(request, d)
        pending = Pending(
            request=request, plan=decision.targets, strategy=decision.strategy, route=decision.route, delivery=d
        )
        first = d.num_delivered == 1  # a redelivered request had its shadow the first time
        validate = first and decision.targets[0].tier == "local" and validation.drawn(request, self.cfg, snap)
        shadow = self.shadow(request, decision.targets[0].model, snap) if validate else None
        await self.flow.start(pending, resume_after=resume)
        if shadow is not None:
            await self.flow.start(shadow)

    def shadow(self, request: GenerateRequest, model: str, snap: Snapshot) -> Pending | None:
        """Premium validation: the premium copy of a request served locally (None: no premium model can
        answer it, and the skip is an event). Its hold and charge are the budget_guard's, as for any call."""
        why = validation.unavailable(snap)
        plan = validation.shadow_plan(request, self.cfg, snap) if why is None else []
        if not plan:
            self.emit_nowait(ValidationSkipped(request_id=request.id, model=model, reason=why or "no_premium_model"))
            return None
        copy = validation.shadow_request(request, plan[0], self.cfg)
        self.pairs.expect(request.id, copy.id)
        return Pending(request=copy, plan=plan, strategy="validation")

    def observed(self, request_id: str, outcome: Outcome | None) -> None:
        verdict = self.pairs.seen(request_id, outcome)
        if verdict is not None:
            self.emit_nowait(verdict)

    async def resume_point(self, request: GenerateRequest, d: Delivery) -> int:
        """After a router restart, continue after the last failed attempt instead of from scratch."""
        if d.num_delivered == 1:
            return -1
        try:
            msg = await self.js.get_last_msg("RESULTS", subjects.attempt_failed(request.id, request.origin))
            return ATTEMPT_FAILED.decode(msg.data or b"").attempt
        except Exception:
            return -1

    async def start_fanout(self, request: GenerateRequest, d: Delivery) -> None:
        snap = self.view.snapshot()
        route = self.cfg.routes.get(request.requirements.route or "")
        threshold = self.cfg.router.ensemble.consensus_threshold
        models = None
        if request.mode == "ensemble" and route is not None:
            models, threshold = [route.primary, *route.validators], route.consensus_threshold
        children = (
            fanout.diverse_children(request, self.cfg, snap)
            if request.mode == "diverse"
            else fanout.ensemble_children(request, self.cfg, snap, models)
        )
        if isinstance(children, ErrorInfo):
            error = GenerateError(request_id=request.id, error=children, created_at=time.time())
            await publish_outcome(self, error, request.origin)
            await d.ack()
            return
        await self.flow.start_fanout(FanOut(request=request, delivery=d, models=models, threshold=threshold), children)

    async def refuse(self, d: Delivery, reason: str) -> None:
        """A request that cannot be decoded or admitted still gets a typed error, if its subject names
        an id and an origin (the one who published it: permissions made sure of that)."""
        where = subjects.parse_request(d.subject)
        if where is None:
            return
        try:
            REQUEST.decode(d.data)
            info = ErrorInfo.of("bad_request", reason)
        except SchemaError as exc:
            info = exc.to_info()
        with contextlib.suppress(SchemaError, ValueError):
            error = GenerateError(request_id=where.request_id, error=info, created_at=time.time())
            await publish_outcome(self, error, where.origin)

    # --- outcomes and failures (core subscriptions) --------------------------------------------
    async def on_outcome(self, msg: Msg) -> None:
        where = subjects.parse_answer(msg.subject)
        rid = where.request_id if where else ""
        if rid not in self.flow.pending:
            return
        try:
            outcome = OUTCOME.decode(msg.data)
        except SchemaError:
            outcome = None
        await self.flow.finished(rid, outcome)

    async def on_failure(self, msg: Msg) -> None:
        where = subjects.parse_answer(msg.subject)
        rid = where.request_id if where else ""
        if rid not in self.flow.pending:
            return
        try:
            failure = ATTEMPT_FAILED.decode(msg.data)
        except SchemaError:
            self.log.warning("malformed failure on %s", msg.subject)
            return
        await self.flow.failed(failure)

    def emit_nowait(self, event: Event) -> None:
        """High-volume events (one per request) go out without waiting for the store's ack."""
        import msgspec

        event = msgspec.structs.replace(event, at=event.at or time.time(), source=event.source or self.name)
        task = asyncio.ensure_future(self.nc.publish(subjects.event(event), encode(event)))
        self.background.add(task)
        task.add_done_callback(self.background.discard)


if __name__ == "__main__":  # pragma: no cover
    from bus.runner import main

    main(Router)
