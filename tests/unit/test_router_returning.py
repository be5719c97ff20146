"""Waiting for a gpu_host that is coming back, and a stream reader that never glues two generations:
pure functions of plain data."""

from __future__ import annotations

from actors.router.returning import keep_waiting, plan_or_wait, returning_hosts
from bus.outcomes import StreamFollower
from policy.routing import Plan
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.result import GenerateError, GenerateResult, StreamChunk
from tests.unit.test_router_policy import LOCAL, NOW, host, req, snap

STALE = NOW - 60  # the last heartbeat of a host that died a minute ago


def test_a_killed_host_is_waited_for_when_nothing_live_can_answer() -> None:
    killed = snap(LOCAL, {"cpu0": host("cpu0", "smollm2-135m", beat=STALE)})
    assert returning_hosts(LOCAL, killed) == {"cpu0"}
    planned = plan_or_wait(req(model="smollm2-135m"), LOCAL, killed)
    assert isinstance(planned, Plan) and planned.targets[0].host == "cpu0"
    assert "waiting for gpu_host cpu0" in planned.reason


def test_a_host_that_said_goodbye_is_not_waited_for() -> None:
    stopped = snap(LOCAL, {"cpu0": host("cpu0", "smollm2-135m", up=False, beat=STALE)})
    assert returning_hosts(LOCAL, stopped) == set()
    planned = plan_or_wait(req(model="smollm2-135m"), LOCAL, stopped)
    assert isinstance(planned, ErrorInfo) and planned.code == "unavailable"


def test_a_live_target_later_in_the_plan_is_taken_instead_of_waiting() -> None:
    local = Target(tier="local", model="smollm2-135m", family="smollm", host="cpu0")
    cloud = Target(tier="together", model="together/llama3.1-70b", family="llama", provider="together")
    other = Target(tier="local", model="gemma3-270m", family="gemma", host="cpu1")
    assert keep_waiting(local, [], {"cpu0"}, lambda h: False)
    assert not keep_waiting(local, [cloud], {"cpu0"}, lambda h: False)
    assert not keep_waiting(local, [other], {"cpu0"}, lambda h: h == "cpu1")
    assert keep_waiting(local, [other], {"cpu0"}, lambda h: False)  # cpu1 is down too: wait for cpu0
    assert not keep_waiting(local, [], set(), lambda h: False)  # not coming back: fail over


def chunk(attempt: int, index: int, text: str) -> StreamChunk:
    return StreamChunk(request_id="r1", attempt=attempt, index=index, text=text)


def result(attempt: int, text: str) -> GenerateResult:
    return GenerateResult(
        request_id="r1", attempt=attempt, text=text, model="smollm2-135m", family="smollm", tier="local", target="cpu0"
    )


def test_a_generation_begun_again_on_a_restarted_host_is_not_glued_to_the_first() -> None:
    follow = StreamFollower()
    assert follow.accept(chunk(0, 0, "Red")) and follow.accept(chunk(0, 1, " and"))
    assert not follow.accept(chunk(0, 0, "Red"))  # the redelivered dispatch generates from index 0 again
    assert not follow.accept(chunk(0, 1, " and"))
    out = follow.outcome(result(0, "Red and blue"))
    assert isinstance(out, GenerateError) and "the answer was cut: attempt 0 began again" in out.error.message


def test_a_stream_of_one_generation_keeps_its_answer_and_other_attempts_are_dropped() -> None:
    follow = StreamFollower()
    assert follow.accept(chunk(1, 0, "")) and follow.accept(chunk(1, 1, "Blue"))
    assert not follow.accept(chunk(0, 5, "late"))
    assert follow.outcome(result(1, "Blue")) == result(1, "Blue")
    cut = follow.outcome(result(2, "Green"))
    assert isinstance(cut, GenerateError) and "attempt 1 failed" in cut.error.message
