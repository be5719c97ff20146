"""The router: where each request goes (policy/routing.py), and owning it until one outcome exists (flow.py).

It consumes ``orch.request.>``, holds each request message until its outcome is stored, dispatches to
``orch.dispatch.host.*`` / ``orch.dispatch.cloud.*``, falls back on typed failures and timeouts, fans out
``diverse`` and ``ensemble`` requests, and watches queue depths. Several instances may run side by side.
Everything it reacts to is one message of ``messages.RouterMsg``, and ``handle`` matches on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, assert_never

import msgspec
from nats.aio.msg import Msg

from actors.router import fanout, heard
from actors.router.ensemble import cache_embedder
from actors.router.flow import Flow, FlowIO
from actors.router.identity import admit
from actors.router.messages import (
    AttemptFailedSeen,
    AttemptTimedOut,
    DeadlinePassed,
    HostsTick,
    LeasesTick,
    OutcomeSeen,
    QueuesTick,
    RequestArrived,
    RequestDeadLettered,
    RouterMsg,
)
from actors.router.pending import FanOut, Pending
from actors.router.queues import PERIOD as QUEUES_EVERY
from actors.router.queues import QueueWatch
from actors.router.returning import plan_or_wait, returning_hosts
from actors.router.view import Link, View
from bus import subjects
from bus.actor import Actor
from bus.background import Background
from bus.consumer import OFF_PATH_LINGER, ConsumerSpec, Delivery
from bus.heap import Trimmer
from bus.outcomes import publish_outcome, stored_failure, stored_outcome
from clients.budget import SWEEP_EVERY, BudgetClient
from clients.cache import CacheClient
from policy import validation
from policy.keys import may_use, policy_for, shape_error
from policy.routing import consensus_route
from policy.targets import Snapshot, host_up
from schemas.codec import REQUEST, encode
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Dispatch
from schemas.errors import ErrorInfo, SchemaError
from schemas.events import Event, ValidationSkipped
from schemas.request import GenerateRequest
from schemas.result import GenerateError, Outcome

DEADLINE_SLACK_S = 5.0  # clock skew between a client and the router
HOSTS_EVERY = 1.0


class Router(Actor):
    """Routes every request: strategies, cost ladder, fallback chains, fan-out and consensus."""

    name = "router"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self._view: View | None = None  # KV watches: needs the bus (on_start)
        self.link = Link()  # the router's own bus connection: liveness is judged only while it is up
        self.budget = BudgetClient(self)
        self.cache = CacheClient(self)
        self.pairs = validation.Pairs(cfg.router.validation.agree_at)  # premium validation in flight
        self.flow = Flow(cfg, self._flow_io())
        self.flow.reserve = self.budget.reserve  # a hold before every paid attempt (drawn from a lease)
        self.flow.observe = self.observed
        self.queues: QueueWatch | None = None  # on_start
        self.background = Background(self.log, "router work")
        self.trimmer = Trimmer()
        self._subs: list[Any] = []
        self.waiting_for: set[str] = set()  # hosts whose attempts stay put: they are coming back
        # outcomes the client has already: handled just after, not beside the gateway's answer
        now = partial(heard.handled_now, self.flow)
        self.outcomes = heard.OutcomeFeed(now, lambda m: self.handle(OutcomeSeen(m)), delay=OFF_PATH_LINGER)

    def _flow_io(self) -> FlowIO:
        async def dispatch(subject: str, d: Dispatch, msg_id: str) -> object:
            return await self.publish(subject, d, msg_id=msg_id)

        async def answer(outcome: Outcome, origin: str) -> bool:
            return await publish_outcome(self, outcome, origin)

        return FlowIO(
            publish=dispatch,
            answer=answer,
            stored=lambda request_id, origin: stored_outcome(self.js, request_id, origin),
            emit=self.emit,
            emit_nowait=self.emit_nowait,
            later=self.later,
            started=lambda key: self.view.started(key),
            finished=lambda key, total_ms: self.view.finished(key, total_ms),
            host_alive=self.host_alive,
            hosts_returning=self.hosts_returning,
        )

    @property
    def view(self) -> View:
        if self._view is None:
            raise RuntimeError("the router is not started")
        return self._view

    def consumers(self) -> list[ConsumerSpec]:
        defaults = self.consumer_defaults()
        return [
            ConsumerSpec(
                stream=subjects.REQUESTS_STREAM,
                durable="router",
                subjects=(subjects.REQUEST_ALL,),
                handler=self.deliver(RequestArrived),
                concurrency=self.cfg.router.concurrency,
                on_dead_letter=lambda d, reason: self.handle(RequestDeadLettered(d, reason)),
                description="requests, held until their outcome is stored",
                **defaults,
            )
        ]

    async def on_start(self) -> None:
        self.flow.embed = cache_embedder(self.nc, timeout=float(self.cfg.router.ensemble.embed_timeout))
        view = self._view = View(self.js, self.link, min_samples=self.cfg.router.validation.min_samples)
        self.flow.measured = view.accuracy  # premium agreement and reviews, once enough checks exist
        for name, live in view.views().items():
            self.spawn(f"view:{name}", live.run)
        self.spawn("overflow", view.overflow.run)
        await view.wait_ready()
        self.link.leader = await view.hosts_leader()
        # Every instance hears every outcome and failure: the owner of the request acts on it.
        self._subs.append(await self.nc.subscribe(subjects.RESULT_FINAL, cb=self.outcomes.heard))
        self._subs.append(await self.nc.subscribe(subjects.RESULT_FAILED, cb=self._heard(AttemptFailedSeen)))
        self.queues = QueueWatch(self.js, self.cfg.router, emit=self.emit, mark_backlog=view.mark_backlog)
        self.every("queues", QUEUES_EVERY, QueuesTick)
        self.link.reconnects = self.nc.stats["reconnects"]
        self.every("hosts", HOSTS_EVERY, HostsTick)
        self.every("leases", SWEEP_EVERY, LeasesTick)

    async def on_stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.outcomes.drain()
        self.background.cancel()
        await self.budget.close()  # the undrawn part of its budget leases goes back

    # --- the one entry point -------------------------------------------------------------------
    async def handle(self, msg: RouterMsg) -> None:
        match msg:
            case RequestArrived(d):
                await self.route(d)
            case RequestDeadLettered(d, reason):
                await self.refuse(d, reason)
            case OutcomeSeen(m):
                await heard.outcome_seen(self.flow, m)
            case AttemptFailedSeen(m):
                await heard.failure_seen(self.flow, m)
            case AttemptTimedOut(p, attempt):
                await self.flow.attempt_timeout(p, attempt)
            case DeadlinePassed(p):
                await self.flow.deadline(p)
            case HostsTick():
                await self.check_hosts()
            case QueuesTick():
                if self.queues is not None:
                    await self.queues.tick(self.flow.in_flight())
            case LeasesTick():
                self.budget.sweep()
                self.trimmer.maybe(time.monotonic())  # freed heap back to the system (bus/heap.py)
            case _:
                assert_never(msg)

    def _heard(self, wrap: Callable[[Msg], RouterMsg]) -> Callable[[Msg], Awaitable[None]]:
        """A core subscription's callback: each message becomes ``wrap(msg)``, handled by ``handle``."""

        async def cb(m: Msg) -> None:
            await self.handle(wrap(m))

        return cb

    def later(self, delay: float, msg: RouterMsg) -> asyncio.TimerHandle:
        """Handle ``msg`` in ``delay`` seconds (attempt and deadline timers), as a task the router tracks."""
        return asyncio.get_running_loop().call_later(delay, self._post, msg)

    def _post(self, msg: RouterMsg) -> None:
        self.background.run(self.handle(msg))

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

    async def check_hosts(self) -> None:
        """Fail over attempts whose gpu_host stopped heartbeating (checked every second), judged only
        while the router itself is connected: its own bus outage is not a dead host."""
        link = self.link
        link.poll(self.nc.is_connected, self.nc.stats["reconnects"])
        if not link.connected:
            return
        link.bucket(await self.view.hosts_leader())
        busy = {p.target.host for p in self.flow.in_flight() if p.target and p.target.host}
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
    async def route(self, d: Delivery) -> None:
        """A request from REQUESTS: answered at once (refused, expired, cached, no plan), or held and
        started (single, with its premium shadow when drawn; or fanned out)."""
        request = await self.accept(d)
        if request is None:
            return
        origin = request.origin
        d.hold()
        policy = policy_for(self.cfg, request.client_key)
        refused = shape_error(policy, request, self.cfg)
        if refused is not None:  # more fan-out or a longer deadline than the key may ask
            await self.answer_now(request, refused, d)
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
        await self.start_single(request, d)

    async def accept(self, d: Delivery) -> GenerateRequest | None:
        """The request to route, or None when it needs no routing: refused, already held (a redelivery:
        keep its new handle), finished before a restart, or past its deadline."""
        request = REQUEST.decode(d.data)  # SchemaError -> dead letter, and `refuse` answers the client
        admitted = admit(request, d.subject)  # origin and client identity from the authenticated subject
        if isinstance(admitted, ErrorInfo):
            await self.refuse(d, admitted.message)
            return None
        request = admitted
        if not request.deadline:  # pinned: budget holds and workers must agree on one deadline
            request = msgspec.structs.replace(request, deadline=request.effective_deadline)
        rid = request.id
        owner = self.flow.owner(rid)
        if owner is not None:
            owner.delivery = d.hold()  # redelivered to us while we hold it: keep the new handle
            return None
        origin = request.origin
        if d.num_delivered > 1 and await stored_outcome(self.js, rid, origin) is not None:
            return None  # finished before a restart: just acknowledge
        if request.effective_deadline - time.time() > float(self.cfg.router.max_deadline) + DEADLINE_SLACK_S:
            await self.refuse(d, f"deadline too far away: at most {float(self.cfg.router.max_deadline):g}s")
            return None
        if request.effective_deadline <= time.time():
            error = GenerateError(request_id=rid, error=ErrorInfo.of("timeout", "deadline passed"))
            await publish_outcome(self, error, origin)
            return None
        return request

    async def start_single(self, request: GenerateRequest, d: Delivery) -> None:
        snap = self.view.snapshot()
        decision = plan_or_wait(request, self.cfg, snap)
        if isinstance(decision, ErrorInfo):
            await self.answer_now(request, decision, d)
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
            failed = await stored_failure(self.js, request.id, request.origin)
        except Exception:  # unreadable now (or undecodable): start from scratch
            return -1
        return -1 if failed is None else failed.attempt

    async def start_fanout(self, request: GenerateRequest, d: Delivery) -> None:
        plan = fanout.plan_fanout(request, self.cfg, self.view.snapshot())
        if isinstance(plan, ErrorInfo):
            await self.answer_now(request, plan, d)
            return
        fo = FanOut(request=request, delivery=d, models=plan.models, threshold=plan.threshold)
        await self.flow.start_fanout(fo, plan.children)

    async def answer_now(self, request: GenerateRequest, error: ErrorInfo, d: Delivery) -> None:
        """A request answered with a typed error before any attempt: stored, then acknowledged."""
        outcome = GenerateError(request_id=request.id, error=error, created_at=time.time())
        await publish_outcome(self, outcome, request.origin)
        await d.ack()

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

    def emit_nowait(self, event: Event) -> None:
        """High-volume events (one per request) go out without waiting for the store's ack."""
        event = msgspec.structs.replace(event, at=event.at or time.time(), source=event.source or self.name)
        self.background.run(self.nc.publish(subjects.event(event), encode(event)))


if __name__ == "__main__":  # pragma: no cover
    from bus.runner import main

    main(Router)
