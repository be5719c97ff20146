"""The actor runtime against a real nats-server: ack policy, retries, dead letters, heartbeats,
services, supervision. The test actor runs in-process here; see test_processes for real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from nats.aio.client import Client as NATS

from bus.consumer import ConsumerSpec
from bus.errors import ServiceCallError
from bus.service import call
from bus.supervise import Supervisor
from schemas.codec import encode
from schemas.config import OrchestraConfig
from schemas.events import DeadLettered
from tests.support.actors import Actors
from tests.support.echo_actor import ECHO_STREAM, UPPER, EchoActor, Job, Upper
from tests.support.events import Recorder
from tests.support.wait import eventually


@pytest.fixture
async def echo(cfg: OrchestraConfig, actors: Actors) -> EchoActor:
    return await actors.start(EchoActor(cfg))


async def done_count(nc: NATS, job_id: str) -> int:
    info = await nc.jetstream().stream_info("ECHO", subjects_filter=f"echo.done.{job_id}")
    return (info.state.subjects or {}).get(f"echo.done.{job_id}", 0)


async def publish_job(nc: NATS, job: Job) -> None:
    await nc.jetstream().publish(f"echo.job.{job.id}", encode(job), headers={"Nats-Msg-Id": job.id})


async def test_job_is_handled_once_and_acked(echo: EchoActor, nc: NATS) -> None:
    """A published job is handled, its result stored once, and nothing stays unacknowledged."""
    await publish_job(nc, Job(id="a1", text="hello"))
    await eventually(lambda: done_count(nc, "a1"))
    msg = await nc.jetstream().get_last_msg("ECHO", "echo.done.a1")
    assert b'"text":"HELLO"' in msg.data
    info = await eventually(lambda: _settled(nc))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def _settled(nc: NATS) -> object:
    info = await nc.jetstream().consumer_info("ECHO", "echo")
    return info if info.num_ack_pending == 0 else None


async def test_duplicate_publishes_with_one_msg_id_are_stored_once(echo: EchoActor, nc: NATS) -> None:
    """Publishing the same Msg-Id three times stores one message and runs the job once."""
    js = nc.jetstream()
    acks = [await js.publish("echo.job.dup", encode(Job(id="dup")), headers={"Nats-Msg-Id": "dup"}) for _ in range(3)]
    assert [a.duplicate for a in acks] == [None, True, True] or [bool(a.duplicate) for a in acks] == [False, True, True]
    assert len({a.seq for a in acks}) == 1
    await eventually(lambda: done_count(nc, "dup"))
    await asyncio.sleep(0.3)
    assert await done_count(nc, "dup") == 1


async def test_transient_failures_are_retried_until_success(echo: EchoActor, nc: NATS) -> None:
    """A handler raising Transient is nak'ed and redelivered; the third delivery succeeds."""
    await publish_job(nc, Job(id="t1", fail_times=2))
    await eventually(lambda: done_count(nc, "t1"))
    msg = await nc.jetstream().get_last_msg("ECHO", "echo.done.t1")
    assert b'"deliveries":3' in msg.data


async def _dead_letters(nc: NATS) -> list[object]:
    js = nc.jetstream()
    info = await js.stream_info("DEADLETTER")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages:
            out.append(await js.get_msg("DEADLETTER", seq))
    return out


async def test_poison_message_is_dead_lettered_and_actor_keeps_serving(echo: EchoActor, nc: NATS) -> None:
    """A Permanent failure goes to orch.dlq.ECHO with its reason; the next job is still handled."""
    rec = await Recorder.listen(nc, "deadletter")
    await publish_job(nc, Job(id="p1", poison=True))
    letters = await eventually(lambda: _dead_letters(nc))
    headers = letters[0].headers
    assert letters[0].subject == "orch.dlq.ECHO"
    assert "poison" in headers["Orch-Reason"]
    assert headers["Orch-Subject"] == "echo.job.p1"
    await eventually(lambda: rec.events)
    assert isinstance(rec.events[0], DeadLettered) and rec.events[0].consumer == "echo"
    await publish_job(nc, Job(id="after-poison"))
    await eventually(lambda: done_count(nc, "after-poison"))
    assert await done_count(nc, "p1") == 0


async def test_undecodable_message_is_dead_lettered(echo: EchoActor, nc: NATS) -> None:
    """Bytes that are not a Job are dead-lettered with the decode error, not retried."""
    await nc.jetstream().publish("echo.job.garbage", b"\x00not json")
    letters = await eventually(lambda: _dead_letters(nc))
    assert "SchemaError" in letters[0].headers["Orch-Reason"]
    assert letters[0].headers["Orch-Deliveries"] == "1"


async def test_crashing_handler_is_logged_once_and_dead_lettered_after_max_deliver(
    echo: EchoActor, nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception is logged with its traceback once, retried, then dead-lettered."""
    caplog.set_level(logging.WARNING)
    await publish_job(nc, Job(id="c1", crash=True))
    letters = await eventually(lambda: _dead_letters(nc), timeout=15)
    assert "gave up after 3 deliveries" in letters[0].headers["Orch-Reason"]
    tracebacks = [r for r in caplog.records if r.exc_info and "c1" in str(r.exc_info[1])]
    assert len(tracebacks) == 1


async def test_long_job_is_kept_alive_by_in_progress_heartbeats(echo: EchoActor, nc: NATS) -> None:
    """A job running 2.5x the ack wait (2 s) is not redelivered: in_progress keeps it."""
    await publish_job(nc, Job(id="long", sleep_s=5.0))
    await eventually(lambda: done_count(nc, "long"), timeout=15)
    msg = await nc.jetstream().get_last_msg("ECHO", "echo.done.long")
    assert b'"deliveries":1' in msg.data
    info = await nc.jetstream().consumer_info("ECHO", "echo")
    assert info.num_redelivered == 0


async def test_service_answers_and_returns_typed_errors(echo: EchoActor, nc: NATS) -> None:
    """A service answers good input; bad input gets bad_request naming the field; no service -> unavailable."""
    assert (await call(nc, "echosvc.upper", Upper(text="abc"), UPPER)).text == "ABC"
    with pytest.raises(ServiceCallError) as bad:
        await call(nc, "echosvc.upper", b'{"text": 5}', UPPER)
    assert bad.value.info.code == "bad_request" and bad.value.info.field == "text"
    with pytest.raises(ServiceCallError) as empty:
        await call(nc, "echosvc.upper", Upper(text=""), UPPER)
    assert empty.value.info.code == "bad_request"
    with pytest.raises(ServiceCallError) as missing:
        await call(nc, "echosvc.nobody", Upper(text="x"), UPPER, timeout=1)
    assert missing.value.info.code == "unavailable"
    assert (await call(nc, "echosvc.upper", Upper(text="still"), UPPER)).text == "STILL"


async def test_supervised_task_restarts_after_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    """A crashing background task is logged once with a traceback and restarted with backoff."""
    sup = Supervisor(logging.getLogger("test"), min_backoff=0.01)
    runs = 0
    finished = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        finished.set()

    sup.spawn("flaky", flaky)
    await asyncio.wait_for(finished.wait(), 5)
    await sup.stop()
    assert runs == 3
    assert len([r for r in caplog.records if r.exc_info]) == 1


async def test_stop_naks_in_flight_work_so_another_instance_takes_it(
    cfg: OrchestraConfig, nc: NATS, actors: Actors
) -> None:
    """An instance stopped mid-job hands the job back at once; a second instance finishes it."""
    first = await actors.start(EchoActor(cfg, instance="first"))
    await publish_job(nc, Job(id="handover", sleep_s=30))
    await eventually(lambda: first.consumers_running[0].busy)
    await actors.stop(first, grace=0.2)
    await actors.start(EchoActor(cfg, instance="second"))
    info = await eventually(lambda: _redelivered(nc))
    assert info.num_redelivered >= 1


async def _redelivered(nc: NATS) -> object:
    info = await nc.jetstream().consumer_info("ECHO", "echo")
    return info if info.num_redelivered else None


class LingeringEcho(EchoActor):
    """The echo actor with its consumer polling for messages in batches (``linger``)."""

    def consumers(self) -> list[ConsumerSpec]:
        return [dataclasses.replace(spec, linger=0.05, concurrency=16) for spec in super().consumers()]


async def test_lingering_consumer_handles_every_message_once_and_acks_it(
    cfg: OrchestraConfig, nc: NATS, actors: Actors
) -> None:
    """With linger, a burst of jobs is polled for in batches: each result stored once, nothing left unacked;
    a job that comes after the polls backed off (nothing found) is handled too."""
    await actors.start(LingeringEcho(cfg))
    for i in range(40):
        await publish_job(nc, Job(id=f"lg{i}", text="x"))
    for i in range(40):
        await eventually(lambda i=i: done_count(nc, f"lg{i}"))  # type: ignore[misc]
    info = await eventually(lambda: _settled(nc))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    assert [await done_count(nc, f"lg{i}") for i in range(40)] == [1] * 40
    await publish_job(nc, Job(id="lg-late", text="x"))
    await eventually(lambda: done_count(nc, "lg-late"))
    info = await eventually(lambda: _settled(nc))
    assert info.num_ack_pending == 0 and await done_count(nc, "lg-late") == 1


def test_echo_stream_is_declared() -> None:
    """The test actor's stream does not overlap the orchestra's."""
    from bus.subjects import STREAMS, find_overlaps

    assert find_overlaps([*STREAMS, ECHO_STREAM]) == []
