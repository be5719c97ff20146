"""A gpu_host killed (kill -9 by PID) under a steady load of requests through the front door (real
llama.cpp on SmolLM2, a third of them streamed), kept down until the router judges it dead, then
restarted within the requests' deadline: its requests are redelivered and answered; none is lost,
none answered twice, and a stream ends with its whole answer or with one typed error."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from actors.gateway.actor import Gateway
from actors.router.actor import Router
from bus import subjects
from schemas.codec import OUTCOME
from schemas.config import OrchestraConfig, load_config
from schemas.result import GenerateResult
from tests.support.actors import Actors
from tests.support.client import outcomes_stored
from tests.support.faultload import FrontDoorLoad, record, tally
from tests.support.gpu_host import HOST, host_profile, stored
from tests.support.procs import ActorProcess
from tests.support.wait import eventually

KEY = "sk-fault-test"
REQUESTS = 45
RATE = 3.0  # requests per second: the load lasts 15 s
KILL_AT = 9  # the host dies once this many requests were sent and it is generating


@pytest.fixture
def fcfg(tmp_path: Path, nats_server) -> tuple[Path, OrchestraConfig]:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keys.txt").write_text(f"fault:{KEY}\n")
    profile = host_profile(
        tmp_path / "profile", nats_server.url, {}, real_models="warm",
        overrides={
            "data_dir": str(tmp_path / "data"),
            "gateway": {"port": 0, "api_keys_file": "keys.txt", "request_timeout": "150s"},
            "hosts": {HOST: {"n_threads": 1, "n_threads_batch": 1, "heartbeat": "1s"}},
        },
    )  # fmt: skip
    return profile, load_config(profile)


def start_host(profile: Path, procs: list[ActorProcess]) -> ActorProcess:
    proc = ActorProcess("actors.gpu_host", profile, "--host", HOST).start()
    procs.append(proc)
    return proc


@pytest.fixture
async def front(fcfg: tuple[Path, OrchestraConfig], actors: Actors) -> tuple[Router, Gateway]:
    _, cfg = fcfg
    router = await actors.start(Router(cfg, instance="fault-router"))
    gateway = await actors.start(Gateway(cfg, port=0, instance="fault-gw"))
    return router, gateway


def generating(router: Router) -> bool:
    state = router.view.hosts.data.get(HOST)
    return state is not None and any(m.in_flight > 0 for m in state.models)


@pytest.mark.slow
async def test_a_gpu_host_killed_and_restarted_under_load_loses_and_duplicates_nothing(
    fcfg: tuple[Path, OrchestraConfig], front: tuple[Router, Gateway], nc: NATS, processes: list[ActorProcess]
) -> None:
    profile, _ = fcfg
    router, gateway = front
    procs = processes  # stopped (by PID) when the test ends
    start_host(profile, procs)
    await eventually(lambda: router.host_alive(HOST), timeout=90)
    load = FrontDoorLoad(f"http://127.0.0.1:{gateway.bound_port}/v1", KEY)
    warm = await load.run(n=1, rate=1.0, stream_every=0)  # the model is loaded before the load starts
    assert warm[0].answered, warm[0].errors
    window: list[float] = []

    async def fault() -> None:
        await eventually(lambda: generating(router), timeout=60, interval=0.02)
        window.append(time.time())
        procs[-1].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # kill -9 by PID
        procs[-1].proc.wait(10)  # type: ignore[union-attr]
        await eventually(lambda: not router.host_alive(HOST), timeout=30)  # judged dead: the hard case
        start_host(profile, procs)
        await eventually(lambda: router.host_alive(HOST), timeout=90)
        window.append(time.time())

    faulting: list[asyncio.Task[None]] = []

    async def before(i: int) -> None:
        if i == KILL_AT:
            faulting.append(asyncio.create_task(fault()))

    sent = await load.run(n=REQUESTS, rate=RATE, stream_every=3, timeout_s=120, before=before)
    await faulting[0]
    stored_counts = [await outcomes_stored(nc, s.request_id) for s in sent]
    report = tally(sent, fault=(window[0], window[1]), duplicated=sum(c > 1 for c in stored_counts),
                   name="gpu_host kill -9, restarted")  # fmt: skip
    record(report)
    assert all(s.request_id for s in sent)
    assert stored_counts == [1] * len(sent), "every request ends in exactly one stored outcome"
    whole = [s for s in sent if not s.stream]
    assert all(s.answered for s in whole), [(s.index, s.status, s.errors) for s in whole if not s.answered]
    for s in [s for s in sent if s.stream]:
        assert len(s.errors) <= 1 and s.done, (s.index, s.errors)
        assert all("answer was cut" in e for e in s.errors), s.errors  # the one error a stream may end with
        if not s.errors:  # the text the client read is the stored answer: never two generations glued
            msg = await stored(nc, subjects.result(s.request_id, subjects.ORIGIN_GATEWAY))
            outcome = OUTCOME.decode(msg.data)  # type: ignore[union-attr]
            assert isinstance(outcome, GenerateResult) and outcome.text == s.text, (s.index, s.text)
    assert report["answered"] >= len(whole)
