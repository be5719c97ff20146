"""A bus outage is not a dead host: the single-node nats-server is killed (kill -9) and restarted on the
same port and store while requests are in flight; the router judges gpu_host liveness only while it is
itself connected, so every request is answered once after the bus comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from actors.router.actor import Router
from actors.router.view import Link
from bus.server import EmbeddedNats
from policy.routing import Snapshot, host_up
from schemas.config import OrchestraConfig
from schemas.request import ChatMessage, GenerateRequest, make_request
from schemas.result import GenerateResult
from schemas.state import HostState
from tests.support.actors import Actors
from tests.support.client import ask, outcomes_stored
from tests.support.faultload import percentile, record
from tests.support.profile import test_config
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

OUTAGE_S = 7.0  # longer than a host's staleness limit (5 s): the fault that used to fail requests
LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}


def test_a_host_is_judged_from_the_last_reconnect_not_from_before_the_outage(tmp_path: Path) -> None:
    """Pure: a heartbeat older than the limit counts as down, unless the router was deaf meanwhile."""
    cfg = test_config(tmp_path / "profile", "nats://127.0.0.1:4222")
    now = 1000.0
    snap = Snapshot(now=now, hosts={"cpu0": HostState(host="cpu0", heartbeat_at=now - 9)})
    assert not host_up(cfg, snap, "cpu0")
    after_outage = Snapshot(now=now, hosts=snap.hosts, observed_since=now - 1)
    assert host_up(cfg, after_outage, "cpu0")


def test_the_link_sees_a_reconnect_it_was_not_told_about() -> None:
    link = Link()
    link.poll(connected=True, reconnects=0)
    assert link.connected and link.since == 0.0
    link.poll(connected=False, reconnects=0)
    assert not link.connected
    link.poll(connected=True, reconnects=1)
    assert link.connected and link.since > 0
    before = link.since
    link.poll(connected=True, reconnects=2)  # lost and back between two polls
    assert link.since >= before and link.reconnects == 2


@pytest.fixture
def ocfg(tmp_path: Path, nats_server: EmbeddedNats) -> OrchestraConfig:
    return test_config(tmp_path / "profile", nats_server.url, overrides={"router": {"attempt_timeout": "60s"}})


@pytest.fixture
async def running(ocfg: OrchestraConfig, actors: Actors) -> tuple[Router, ScriptedWorker]:
    # each answer takes 10 s: still being worked on when the bus comes back
    worker = await actors.start(ScriptedWorker(ocfg, hosts=LOCAL, script={"*": ["slow:10"]}))
    router = await actors.start(Router(ocfg, instance="outage-router"))
    await eventually(lambda: router.view.hosts.data)
    return router, worker


@pytest.mark.slow
async def test_a_bus_outage_longer_than_the_heartbeat_limit_fails_no_request(
    running: tuple[Router, ScriptedWorker], nats_server: EmbeddedNats, nc: NATS
) -> None:
    """kill -9 of the only nats-server for 7 s with 12 requests in flight: all 12 answered, once each."""
    router, worker = running
    requests = [make_request(messages=[ChatMessage(role="user", content=f"q{i}")], timeout_s=90) for i in range(12)]
    sent_at = time.time()

    async def timed(r: GenerateRequest) -> tuple[object, float]:
        return await ask(nc, r, timeout=80), time.time()

    asks = [asyncio.ensure_future(timed(r)) for r in requests]
    await eventually(lambda: len({s.request_id for s in worker.seen}) == len(requests))  # all in flight
    nats_server.kill()
    await eventually(lambda: not router.link.connected, timeout=5)
    down_at = time.monotonic()
    await asyncio.sleep(OUTAGE_S)  # the fault itself: the bus stays down this long
    nats_server.start()
    answers = await asyncio.gather(*asks)
    outcomes = [o for o, _ in answers]
    assert time.monotonic() - down_at >= OUTAGE_S
    await eventually(lambda: router.link.since > 0, timeout=5)  # the reconnect seen: a fresh grace period
    failed = [o for o in outcomes if not isinstance(o, GenerateResult)]
    stored = [await outcomes_stored(nc, r.id) for r in requests]
    lat = [(at - sent_at) * 1000 for _, at in answers]  # every request was in flight during the outage
    record({
        "fault": f"single-node bus kill -9, down {OUTAGE_S:g} s", "sent": len(requests),
        "answered": len(requests) - len(failed), "failed": len(failed), "duplicated": sum(n > 1 for n in stored),
        "sent_during_fault": len(requests), "p50_ms": round(percentile(lat, 0.5)),
        "p99_ms": round(percentile(lat, 0.99)), "p99_during_fault_ms": round(percentile(lat, 0.99)),
    })  # fmt: skip
    assert not failed, failed
    assert {o.request_id for o in outcomes} == {r.id for r in requests}  # type: ignore[attr-defined]
    assert stored == [1] * len(requests)
    assert all(s.attempt == 0 for s in worker.seen)  # no attempt was failed over to another model
