"""The life of each request the router owns, until exactly one outcome exists (docs/protocol.md).

    Flow(cfg, FlowIO(...))   the requests in flight (``Pending``, ``FanOut``: pending.py) and their moves

Events in (messages the router's ``handle`` passes on): a dispatch failed
(``orch.result.<origin>.<id>.failed``), an outcome was stored (``orch.result.<origin>.<id>``), an attempt
timed out, the deadline passed. Each moves the request to its
next attempt or finishes it; stale events (an old attempt, a finished request: ``settled``) are ignored.
What it does to the world (publish, store an outcome, emit, schedule a timer message) goes through
``FlowIO``, the callables the router gives it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from actors.router import ensemble, fanout
from actors.router.messages import AttemptTimedOut, DeadlinePassed, RouterMsg
from actors.router.pending import FanOut, Pending, Reserve, dispatch_subject, settled
from actors.router.returning import keep_waiting
from policy.caching import decide
from policy.targets import target_key
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Dispatch
from schemas.errors import FALLBACK_ON, ErrorInfo
from schemas.events import Escalated, Event, RequestFallback
from schemas.request import GenerateRequest
from schemas.result import (
    AttemptFailed,
    GenerateError,
    GenerateResult,
    Outcome,
    Provenance,
    Response,
    Timings,
    Usage,
)

log = logging.getLogger(__name__)
TIER_RANK = {"local": 0, "together": 1, "premium": 2}
PROMPT_FOR_REVIEW = 4000  # characters of the prompt an escalation carries to the review queue


@dataclass(frozen=True)
class FlowIO:
    """What the flow does to the world and asks of it, given by the router (the flow never holds it)."""

    publish: Callable[[str, Dispatch, str], Awaitable[object]]  # store a dispatch: subject, dispatch, Msg-Id
    answer: Callable[[Outcome, str], Awaitable[bool]]  # store a request's one outcome (origin): first wins
    stored: Callable[[str, str], Awaitable[Outcome | None]]  # the outcome stored for (request id, origin)
    emit: Callable[[Event], Awaitable[None]]
    emit_nowait: Callable[[Event], None]
    later: Callable[[float, RouterMsg], asyncio.TimerHandle]  # the router handles this message then
    started: Callable[[str], None]  # an attempt went to this target key (the view's in-flight counts)
    finished: Callable[[str, float | None], None]  # ... and ended (with its total time, when it answered)
    host_alive: Callable[[str], bool]
    hosts_returning: Callable[[], set[str]]


class Flow:
    def __init__(self, cfg: OrchestraConfig, io: FlowIO) -> None:
        self.cfg = cfg
        self.io = io
        self.pending: dict[str, Pending] = {}
        self.fanouts: dict[str, FanOut] = {}
        self.reserve: Reserve | None = None
        # Told every outcome the router owned (premium validation pairs a local answer with its shadow's).
        self.observe: Callable[[str, Outcome | None], None] | None = None
        self.embed: ensemble.Embed | None = None  # MiniLM vectors for the consensus (the cache's service)
        # each model's measured accuracy (0..1) where enough checks exist (premium agreement, review decisions:
        # the router's view of orch_quality); an answer without logprobs and without a measurement is weighted
        # by its configured rank and says so (confidence_source)
        self.measured: Callable[[], Mapping[str, float]] = dict

    # --- starting ------------------------------------------------------------------------------
    def owner(self, request_id: str) -> Pending | FanOut | None:
        """The request or fan-out this router holds under ``request_id`` (None: not ours, or answered)."""
        return self.pending.get(request_id) or self.fanouts.get(request_id)

    def in_flight(self) -> list[Pending]:
        """Requests with an attempt out (dispatched, not settled)."""
        return [p for p in self.pending.values() if p.target is not None and not settled(p)]

    def track(self, p: Pending) -> None:
        self.pending[p.request.id] = p
        delay = max(0.0, p.request.effective_deadline - time.time())
        p.deadline_timer = self.io.later(delay, DeadlinePassed(p))

    async def start(self, p: Pending, *, resume_after: int = -1) -> None:
        self.track(p)
        p.attempt = resume_after
        await self.next_attempt(p)

    # --- attempts ------------------------------------------------------------------------------
    async def next_attempt(self, p: Pending) -> None:
        cfg = self.cfg
        while not settled(p):
            p.attempt += 1
            remaining = p.request.effective_deadline - time.time()
            if p.attempt >= len(p.plan) or remaining <= 0:
                error = p.last_error or ErrorInfo.of("unavailable", "no candidate left to try")
                if remaining <= 0:
                    error = ErrorInfo.of("timeout", f"deadline passed after {p.attempt} attempt(s)")
                await self.finish_error(p, error)
                return
            target = p.plan[p.attempt]
            alive = self.io.host_alive
            if target.host and not alive(target.host):
                rest = p.plan[p.attempt + 1 :]
                if not keep_waiting(target, rest, self.io.hosts_returning(), alive):
                    p.last_error = ErrorInfo.of("unavailable", f"gpu_host {target.host} is down")
                    continue  # the plan was made when it was up: skip it rather than wait for a timeout
                # else: queued for the host that is coming back (returning.py), within the deadline
            reservation, reserved = None, 0
            if target.tier != "local" and self.reserve is not None:
                granted = await self.reserve(p.request, target, p.attempt)
                if isinstance(granted, ErrorInfo):
                    p.last_error = granted
                    continue
                if granted is not None:
                    reservation, reserved = granted
            dispatch = Dispatch(
                request=p.request,
                target=target,
                attempt=p.attempt,
                plan=p.plan,
                reservation_id=reservation,
                reserved_nanos=reserved,
                prompt_variant=p.prompt_variant,
                parent_id=p.parent.request.id if p.parent else None,
                strategy=p.strategy,
                route=p.route,
                dispatched_at=time.time(),
                cache_store=decide(p.request, enabled=cfg.cache.enabled).store,
            )
            p.target, p.dispatched_at, p.counted = target, time.time(), True
            self.io.started(target_key(target))
            await self.io.publish(dispatch_subject(target), dispatch, f"{p.request.id}:{p.attempt}")
            if settled(p):  # answered while the dispatch was being stored: no timer to arm (it would hold p)
                return
            route = cfg.routes.get(p.route) if p.route else None  # a route's timeout_ms replaces the default
            per_attempt = float(cfg.router.attempt_timeout)
            if route is not None and route.timeout_ms is not None:
                per_attempt = route.timeout_ms / 1000
            timeout = min(per_attempt, remaining)
            p.timer = self.io.later(timeout, AttemptTimedOut(p, p.attempt))
            return

    async def failed(self, f: AttemptFailed) -> None:
        p = self.pending.get(f.request_id)
        if p is None or settled(p, f.attempt):
            return  # stale: an earlier attempt, or finished already
        self._stop_attempt(p)
        if f.streamed or f.error.code not in FALLBACK_ON:
            await self.finish_error(p, f.error)
            return
        p.last_error = f.error
        nxt = p.plan[p.attempt + 1].where if p.attempt + 1 < len(p.plan) else None
        self.io.emit_nowait(
            RequestFallback(
                request_id=p.request.id, failed_target=f.target, next_target=nxt, error=f.error, attempt=f.attempt
            )
        )
        await self.next_attempt(p)

    async def attempt_timeout(self, p: Pending, attempt: int) -> None:
        if settled(p, attempt):
            return
        stored = await self.io.stored(p.request.id, p.request.origin)
        if stored is not None:
            await self.finished(p.request.id, stored)
            return
        self._stop_attempt(p)
        where = p.target.where if p.target else "?"
        p.last_error = ErrorInfo.of("timeout", f"{where} did not answer attempt {attempt} in time")
        await self.next_attempt(p)

    async def hosts_down(self, down: set[str]) -> set[str]:
        """Attempts on a gpu_host that stopped heartbeating fail now (the router falls back) instead
        of at their timeout, when a live target can take them; if none can and the host is coming back
        (returning.py), they stay: its dispatches are redelivered to it. Returns the hosts waited for.
        If a host comes back and answers a failed-over attempt anyway, the first outcome wins."""
        returning, alive, waited = self.io.hosts_returning(), self.io.host_alive, set()
        for p in self.in_flight():
            if p.target is None or p.target.host not in down:
                continue
            if keep_waiting(p.target, p.plan[p.attempt + 1 :], returning, alive):
                waited.add(p.target.host or "")
                continue
            self._stop_attempt(p)
            p.last_error = ErrorInfo.of("unavailable", f"gpu_host {p.target.host} stopped answering")
            await self.next_attempt(p)
        return waited

    async def deadline(self, p: Pending) -> None:
        if not settled(p):
            await self.finish_error(p, ErrorInfo.of("timeout", "the request's deadline passed"))

    def _stop_attempt(self, p: Pending, total_ms: float | None = None) -> None:
        if p.timer:
            p.timer.cancel()
            p.timer = None
        if p.target is not None and p.counted:  # once per attempt: a failure that ends the request stops it twice
            p.counted = False
            self.io.finished(target_key(p.target), total_ms)

    # --- finishing -----------------------------------------------------------------------------
    async def finished(self, request_id: str, outcome: Outcome | None) -> None:
        """An outcome for ``request_id`` is stored (seen on orch.result.<origin>.<id>)."""
        p = self.pending.pop(request_id, None)
        if p is None:
            return
        if self.observe is not None:
            self.observe(request_id, outcome)
        total = outcome.timings.total_ms if isinstance(outcome, GenerateResult) else None
        if not settled(p):
            p.done = True
            self._stop_attempt(p, total)
        if p.deadline_timer:
            p.deadline_timer.cancel()
        if p.parent is not None:
            if outcome is None:
                outcome = await self.io.stored(request_id, p.request.origin)
            if outcome is not None:
                await self.collect(p.parent, request_id, outcome)
        elif p.delivery is not None:
            await p.delivery.ack()

    async def finish_error(self, p: Pending, error: ErrorInfo) -> None:
        if settled(p):
            return
        p.done = True
        self._stop_attempt(p)
        outcome = GenerateError(
            request_id=p.request.id, error=error, attempts=max(p.attempt, 0), created_at=time.time()
        )
        await self.io.answer(outcome, p.request.origin)  # the first stored wins: exactly one
        await self.finished(p.request.id, outcome)

    # --- fan-out -------------------------------------------------------------------------------
    async def start_fanout(self, fo: FanOut, children: list[fanout.Child]) -> None:
        self.fanouts[fo.request.id] = fo
        for child in children:
            p = Pending(
                request=child.request,
                plan=child.plan,
                strategy=fo.request.mode,
                parent=fo,
                prompt_variant=child.prompt_variant,
            )
            fo.children[child.request.id] = p
        for p in list(fo.children.values()):
            redelivered = fo.delivery.num_delivered > 1
            stored = await self.io.stored(p.request.id, p.request.origin) if redelivered else None
            if stored is not None:
                await self.collect(fo, p.request.id, stored)
            else:
                await self.start(p)

    async def collect(self, fo: FanOut, child_id: str, outcome: Outcome) -> None:
        fo.outcomes[child_id] = outcome
        if fo.done or len(fo.outcomes) < len(fo.children):
            return
        fo.done = True
        self.fanouts.pop(fo.request.id, None)
        result = await self.combine(fo)
        if isinstance(result, GenerateResult) and result.consensus and result.consensus.escalated:
            await self.io.emit(  # stored before the outcome: the review queue is built from it
                Escalated(
                    request_id=fo.request.id,
                    consistency=result.consensus.consistency,
                    threshold=result.consensus.threshold,
                    models=[r.provenance.model for r in result.responses],
                    prompt=fo.request.prompt_text()[:PROMPT_FOR_REVIEW],
                    responses=result.responses,
                    winner=next((i for i, r in enumerate(result.responses) if r.text == result.text), None),
                )
            )
        await self.io.answer(result, fo.request.origin)
        await fo.delivery.ack()

    async def combine(self, fo: FanOut) -> Outcome:
        req = fo.request
        ok = [(fo.children[cid], o) for cid, o in fo.outcomes.items() if isinstance(o, GenerateResult)]
        if not ok:
            first = next(o for o in fo.outcomes.values() if isinstance(o, GenerateError))
            return GenerateError(
                request_id=req.id, error=first.error, attempts=len(fo.children), created_at=time.time()
            )
        cfg = self.cfg
        responses = self.responses(req, ok)
        winner, consensus = 0, None
        if req.mode == "ensemble":
            winner, consensus = await ensemble.judge(
                req, responses, fo.threshold, embed=self.embed, sandbox=cfg.router.ensemble.sandbox
            )
        best = responses[winner]
        tier = max((r.provenance.tier for r in responses), key=lambda t: TIER_RANK[t])
        return GenerateResult(
            request_id=req.id,
            text=best.text,
            finish_reason=best.finish_reason,
            model=best.provenance.model if req.mode == "ensemble" else req.mode,
            family=best.provenance.family if req.mode == "ensemble" else "mixed",
            tier=tier,
            target="fanout",
            usage=Usage(
                input_tokens=sum(r.usage.input_tokens for r in responses),
                output_tokens=sum(r.usage.output_tokens for r in responses),
            ),
            cost_usd=sum(r.cost_usd for r in responses),
            timings=Timings(total_ms=(time.monotonic() - fo.started) * 1000),
            responses=responses,
            consensus=consensus,
            client_key=req.client_key,
            task=req.task,
            created_at=time.time(),
        )

    def responses(self, req: GenerateRequest, ok: list[tuple[Pending, GenerateResult]]) -> list[Response]:
        """The children's answers with their provenance and confidence (logprobs, measured accuracy or rank)."""
        measured = self.measured()
        confidences = [ensemble.confidence_of(o, self.cfg, measured) for _, o in ok]
        return [
            Response(
                request_id=o.request_id,
                text=o.text,
                finish_reason=o.finish_reason,
                provenance=Provenance(
                    model=o.model,
                    family=o.family,
                    tier=o.tier,
                    target=o.target,
                    temperature=p.request.sampling.temperature,
                    top_p=p.request.sampling.top_p,
                    prompt_variant=p.prompt_variant,
                ),
                usage=o.usage,
                cost_usd=o.cost_usd,
                confidence=conf,
                confidence_source=source,
                logprobs=o.logprobs if req.sampling.logprobs else None,  # asked by the router, not the client
            )
            for (p, o), (conf, source) in zip(ok, confidences, strict=True)
        ]
