"""Actors as real processes (``python -m ...``) against a real nats-server: crashes, signals,
and a nats-server killed and restarted underneath them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from bus.server import EmbeddedNats
from schemas.codec import encode
from tests.support.echo_actor import Job
from tests.support.procs import ActorProcess
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


def echo_process(profile: Path, processes: list[ActorProcess]) -> ActorProcess:
    proc = ActorProcess("tests.support.echo_actor", profile).start()
    processes.append(proc)
    proc.wait_log("echo started")
    return proc


async def done_records(nc: NATS, job_id: str) -> int:
    info = await nc.jetstream().stream_info("ECHO", subjects_filter=f"echo.done.{job_id}")
    return (info.state.subjects or {}).get(f"echo.done.{job_id}", 0)


async def publish_job(nc: NATS, job: Job) -> None:
    await nc.jetstream().publish(f"echo.job.{job.id}", encode(job), headers={"Nats-Msg-Id": job.id})


async def test_kill_9_before_ack_redelivers_and_the_job_is_done_once(
    profile: Path, nc: NATS, processes: list[ActorProcess]
) -> None:
    """A process killed mid-job never acked it: the restarted actor gets it again and does it once."""
    first = echo_process(profile, processes)
    await publish_job(nc, Job(id="k1", text="survive", sleep_s=3))
    first.wait_log("job k1 delivery 1")
    first.kill()
    second = echo_process(profile, processes)
    await eventually(lambda: done_records(nc, "k1"), timeout=20)
    second.wait_log("job k1 done")
    msg = await nc.jetstream().get_last_msg("ECHO", "echo.done.k1")
    assert b'"deliveries":2' in msg.data
    assert await done_records(nc, "k1") == 1


async def test_sigterm_stops_the_actor_within_seconds_and_nothing_is_lost(
    profile: Path, nc: NATS, processes: list[ActorProcess]
) -> None:
    """SIGTERM: in-flight jobs longer than the grace period are handed back; exit 0 within a few
    seconds; a new instance finishes every job exactly once."""
    first = echo_process(profile, processes)
    for i in range(3):
        await publish_job(nc, Job(id=f"s{i}", sleep_s=4))
    for i in range(3):
        first.wait_log(f"job s{i} delivery 1")
    started = time.monotonic()
    assert first.terminate(timeout=10) == 0
    assert time.monotonic() - started < 6
    assert "echo stopped" in first.output()
    echo_process(profile, processes)
    for i in range(3):
        await eventually(lambda i=i: done_records(nc, f"s{i}"), timeout=20)
    assert [await done_records(nc, f"s{i}") for i in range(3)] == [1, 1, 1]


async def test_actor_survives_a_nats_server_crash_and_nothing_stored_is_lost(
    nats_server: EmbeddedNats, profile: Path, processes: list[ActorProcess]
) -> None:
    """kill -9 of nats-server and a restart on the same store: the actor reconnects by itself,
    stored jobs and results survive, new work is handled."""
    echo = echo_process(profile, processes)
    nc = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, **nats_server.connect_options()
    )
    try:
        await publish_job(nc, Job(id="before"))
        await eventually(lambda: done_records(nc, "before"))
        await publish_job(nc, Job(id="queued", sleep_s=1.0))
        echo.wait_log("job queued delivery 1")
        nats_server.kill()
        await asyncio.sleep(1.0)
        nats_server.start()
        await eventually(lambda: nc.is_connected, timeout=15)
        await eventually(lambda: _publish_ok(nc, Job(id="after")), timeout=20)
        await eventually(lambda: done_records(nc, "after"), timeout=30)
        await eventually(lambda: done_records(nc, "queued"), timeout=30)
        assert await done_records(nc, "before") == 1
        assert await done_records(nc, "queued") == 1
        assert await done_records(nc, "after") == 1
        job = await nc.jetstream().get_last_msg("ECHO", "echo.job.before")
        assert b'"id":"before"' in job.data
    finally:
        await nc.close()
    assert "reconnected to nats" in echo.output()


async def _publish_ok(nc: NATS, job: Job) -> bool:
    try:
        await publish_job(nc, job)
        return True
    except Exception:
        return False
