"""The router's Flow on its own: given plain callables (FlowIO) instead of the router, it dispatches,
falls back, ignores stale failures, and schedules its timers as router messages."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import msgspec

from actors.router.flow import Flow, FlowIO
from actors.router.messages import AttemptTimedOut, DeadlinePassed, RouterMsg
from actors.router.pending import Pending, dispatch_subject, settled
from bus import subjects
from policy.caching import decide
from policy.targets import target_key
from schemas.config import load_config
from schemas.dispatch import Dispatch, Target
from schemas.errors import ErrorCode, ErrorInfo
from schemas.events import Event, RequestFallback
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Sampling
from schemas.result import AttemptFailed, GenerateError, Outcome

LOCAL = load_config("local")
FIRST = Target(tier="local", model="smollm2-135m", family="smollm", host="cpu0")
SECOND = Target(tier="local", model="gemma3-270m", family="gemma", host="cpu1")


class World:
    """What the flow did to the world, recorded; every host is alive, no timer fires by itself."""

    def __init__(self) -> None:
        self.dispatched: list[tuple[str, Dispatch, str]] = []
        self.answers: list[tuple[Outcome, str]] = []
        self.events: list[Event] = []
        self.timers: list[tuple[float, RouterMsg]] = []
        self.counts: dict[str, int] = {}

    def io(self) -> FlowIO:
        async def publish(subject: str, d: Dispatch, msg_id: str) -> object:
            self.dispatched.append((subject, d, msg_id))
            return None

        async def answer(outcome: Outcome, origin: str) -> bool:
            self.answers.append((outcome, origin))
            return True

        async def stored(request_id: str, origin: str) -> Outcome | None:
            return None

        async def emit(event: Event) -> None:
            self.events.append(event)

        def later(delay: float, msg: RouterMsg) -> Any:
            self.timers.append((delay, msg))
            return asyncio.get_running_loop().call_later(3600, lambda: None)

        def started(key: str) -> None:
            self.counts[key] = self.counts.get(key, 0) + 1

        def finished(key: str, total_ms: float | None) -> None:
            self.counts[key] -= 1

        return FlowIO(
            publish=publish,
            answer=answer,
            stored=stored,
            emit=emit,
            emit_nowait=self.events.append,
            later=later,
            started=started,
            finished=finished,
            host_alive=lambda host: True,
            hosts_returning=set,
        )


def request() -> GenerateRequest:
    now = time.time()
    return GenerateRequest(
        id="r1", messages=[ChatMessage(role="user", content="hi")], created_at=now, deadline=now + 60
    )


def failure(attempt: int, code: ErrorCode = "timeout") -> AttemptFailed:
    return AttemptFailed(
        request_id="r1", attempt=attempt, target="cpu0", model=FIRST.model, tier="local", error=ErrorInfo.of(code, "x")
    )


async def test_a_failed_attempt_goes_to_the_next_target_and_a_stale_failure_changes_nothing() -> None:
    """Attempt 0 fails: attempt 1 is dispatched to the next target (with a fallback event); the same
    failure heard again is stale and ignored."""
    world = World()
    flow = Flow(LOCAL, world.io())
    p = Pending(request=request(), plan=[FIRST, SECOND])
    await flow.start(p)
    assert [(s, d.attempt, m) for s, d, m in world.dispatched] == [(dispatch_subject(FIRST), 0, "r1:0")]
    assert dispatch_subject(FIRST) == subjects.dispatch_host("cpu0", FIRST.model)
    assert flow.in_flight() == [p] and flow.owner("r1") is p

    await flow.failed(failure(0))
    await flow.failed(failure(0))  # heard twice (another instance's echo): stale now
    assert [(s, d.attempt) for s, d, _ in world.dispatched] == [
        (dispatch_subject(FIRST), 0),
        (dispatch_subject(SECOND), 1),
    ]
    assert [type(e) for e in world.events] == [RequestFallback]
    assert settled(p, 0) and not settled(p, 1) and not settled(p)


async def test_an_answer_heard_while_the_dispatch_is_stored_arms_no_attempt_timer() -> None:
    """A fast worker's result can be seen before the store of its dispatch returns: the request is
    finished then, and no attempt timer is armed after (it would keep the request alive until it fired)."""
    world = World()

    async def publish_then_answered(subject: str, d: Dispatch, msg_id: str) -> object:
        world.dispatched.append((subject, d, msg_id))
        await flow.finished("r1", None)  # the outcome arrives before the store's ack
        return None

    flow = Flow(LOCAL, dataclasses.replace(world.io(), publish=publish_then_answered))
    p = Pending(request=request(), plan=[FIRST])
    await flow.start(p)
    assert len(world.dispatched) == 1 and settled(p) and flow.in_flight() == []
    assert [type(msg) for _, msg in world.timers] == [DeadlinePassed]  # no AttemptTimedOut after the answer
    assert p.timer is None
    assert world.counts[target_key(FIRST)] == 0  # the attempt was counted and stopped once


async def test_timers_are_router_messages_and_the_last_failure_answers_the_client() -> None:
    """The deadline and each attempt's timeout are scheduled as messages for the router's handle; when
    the plan runs out, the one outcome is a typed error and the request is settled and released."""
    world = World()
    flow = Flow(LOCAL, world.io())
    p = Pending(request=request(), plan=[FIRST])
    await flow.start(p)
    kinds = [type(msg) for _, msg in world.timers]
    assert kinds == [DeadlinePassed, AttemptTimedOut]
    timed_out = world.timers[1][1]
    assert isinstance(timed_out, AttemptTimedOut) and timed_out.p is p and timed_out.attempt == 0

    await flow.failed(failure(0, code="bad_request"))  # not one that another target could fix
    assert len(world.answers) == 1
    outcome, origin = world.answers[0]
    assert isinstance(outcome, GenerateError) and outcome.error.code == "bad_request" and origin == p.request.origin
    assert settled(p) and flow.owner("r1") is None and flow.in_flight() == []
    assert world.counts[f"local:cpu0:{FIRST.model}"] == 0  # the view's in-flight count went back down, once
    await flow.attempt_timeout(p, 0)  # a timer that fires after the end: nothing more happens
    assert len(world.answers) == 1 and len(world.dispatched) == 1


async def test_a_request_that_fails_for_good_ends_its_attempt_once_not_another_requests() -> None:
    """Two requests in flight on one target; one fails with an error no other target could fix: the
    target's in-flight count drops by one (it once dropped by two, taking the other request's with it)."""
    world = World()
    flow = Flow(LOCAL, world.io())
    now = time.time()
    hi = [ChatMessage(role="user", content="hi")]
    other = GenerateRequest(id="r2", messages=hi, created_at=now, deadline=now + 60)
    await flow.start(Pending(request=request(), plan=[FIRST, SECOND]))
    await flow.start(Pending(request=other, plan=[FIRST]))
    key = f"local:cpu0:{FIRST.model}"
    assert world.counts[key] == 2
    await flow.failed(failure(0, code="bad_request"))
    assert world.counts[key] == 1 and len(world.answers) == 1
    await flow.deadline(flow.owner("r2"))  # type: ignore[arg-type]
    assert world.counts[key] == 0


async def test_a_dispatch_says_whether_the_cache_keeps_its_answer() -> None:
    """cache_store on the Dispatch (copied into the result) is the cache's own decision for the request: a
    greedy request's miss is remembered, a no_store or a sampled one is not, so the cache need not look."""
    world = World()
    flow = Flow(LOCAL, world.io())
    greedy = msgspec.structs.replace(request(), sampling=Sampling(temperature=0))
    no_store = msgspec.structs.replace(greedy, id="r2", cache=CachePolicy(no_store=True))
    sampled = msgspec.structs.replace(greedy, id="r3", sampling=Sampling(temperature=0.8))
    for req in (greedy, no_store, sampled):
        await flow.start(Pending(request=req, plan=[FIRST]))
    assert LOCAL.cache.enabled
    assert [d.cache_store for _, d, _ in world.dispatched] == [True, False, False]
    assert [decide(d.request).store for _, d, _ in world.dispatched] == [True, False, False]
