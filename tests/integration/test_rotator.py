"""The rotator against a real nats-server and real gpu_hosts running llama.cpp on tiny random GGUF models
(in this process): phase changes, scheduled rotation, swaps under load, queue-depth scaling, re-planning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from actors.gpu_host.actor import GpuHost
from bus.server import EmbeddedNats
from schemas.commands import Rotate, SetOverflow, SetPhase
from schemas.events import ModelLoaded, ModelLoadFailed, ModelUnloaded, PhaseChanged, RotationPlanned, Scale
from schemas.request import Sampling, make_request
from schemas.result import GenerateResult
from tests.support.actors import Actors
from tests.support.client import ask, outcomes_stored
from tests.support.rotator import Rig, footprint, rig_profile, tiny_models, write_slow_llama_gguf
from tests.support.wait import eventually

pytestmark = pytest.mark.slow  # real llama.cpp engines and several actors per test

Start = Callable[..., Awaitable[Rig]]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slow_llama_gguf(tmp_path_factory.mktemp("rotator-models") / "llama-16mb.gguf")


@pytest.fixture
def rig(tmp_path: Path, nats_server: EmbeddedNats, actors: Actors, tiny: Path) -> Start:
    """Start a rig on a profile: rig(models={...}, phases={...}, initial=..., room=2, ...)."""

    async def start(*, room: int, router: bool = False, **kw: Any) -> Rig:
        memory = int(footprint(tiny) * (room + 0.5))  # room for ``room`` tiny models per card, not one more
        profile = rig_profile(tmp_path / "profile", nats_server.url, memory=memory, **kw)
        return await Rig.start(actors, profile, router=router)

    return start


def request(model: str | None, max_tokens: int = 8, **kw: Any) -> Any:
    return make_request(prompt="the cat sat on the mat", model=model, timeout_s=60,
                        sampling=Sampling(max_tokens=max_tokens, temperature=0.0), **kw)  # fmt: skip


async def test_a_phase_change_swaps_to_the_new_phases_models(rig: Start, tiny: Path, nc: NATS) -> None:
    """p1 keeps ta + tb; p2 wants tc and keeps tb cold: the rotator unloads tb, loads tc pinned hot, and
    demotes ta (warm in p2) instead of unloading it; the change is a phase.changed event and in orch_phase."""
    models = tiny_models(tiny, {"ta": "fa", "tb": "fb", "tc": "fc"})
    phases = {"p1": {"groups": {"g": {"always_loaded": ["ta", "tb"]}}},
              "p2": {"groups": {"g": {"always_loaded": ["tc"]}}, "keep_alive": {"tb": "cold"}}}  # fmt: skip
    r = await rig(models=models, phases=phases, initial="p1", room=3)
    await eventually(lambda: r.loaded() == {"ta": "hot", "tb": "hot"})
    assert (await r.phase()).phase == "p1"  # type: ignore[union-attr]
    await r.rotator.send(SetPhase(phase="p2", by="op", reason="test"))  # type: ignore[union-attr]
    await eventually(lambda: r.loaded() == {"ta": "warm", "tc": "hot"}, timeout=20)
    changed = r.events.of(PhaseChanged, phase="p2")
    assert [(e.previous, e.by) for e in changed] == [("p1", "op")]
    assert (await r.phase()).phase == "p2"  # type: ignore[union-attr]
    assert [e.model for e in r.events.of(ModelUnloaded)] == ["tb"]
    assert [e.model for e in r.events.of(ModelLoaded)] == ["ta", "tb", "tc"]
    plan = next(e for e in r.events.of(RotationPlanned) if e.phase == "p2")
    assert "cpu0: unload tb (out of the phase)" in plan.steps
    assert "cpu0: keep ta warm (out of the phase: warm)" in plan.steps


async def test_rotation_walks_the_pool_keeping_families_diverse(rig: Start, tiny: Path) -> None:
    """Every second: one of tb (fb), tc (fc), td (fa) next to ta (fa), room for two. td shares ta's family and
    is passed over; tb and tc take turns, each swap an unload of the last pick, then the load of the next."""
    models = tiny_models(tiny, {"ta": "fa", "tb": "fb", "tc": "fc", "td": "fa"})
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta"], "rotation_pool": ["tb", "tc", "td"]}},
                    "rotation_frequency": "1s"}}  # fmt: skip
    r = await rig(models=models, phases=phases, initial="p", room=2)
    state = await eventually(lambda: _rotations(r, 5), timeout=40)
    assert state.history[:5] == [["tb"], ["tc"], ["tb"], ["tc"], ["tb"]]
    loads = [e.model for e in r.events.of(ModelLoaded)]
    assert "td" not in loads and loads[:2] == ["ta", "tb"]
    swaps = [(type(e).__name__, e.model) for e in r.events.events if isinstance(e, ModelLoaded | ModelUnloaded)]
    for i, (kind, model) in enumerate(swaps[2:], start=2):  # every load after the first two follows an unload
        if kind == "ModelLoaded":
            assert swaps[i - 1][0] == "ModelUnloaded" and swaps[i - 1][1] != model


async def _rotations(r: Rig, n: int) -> Any:
    state = await r.phase()
    return state if state is not None and state.rotations >= n else None


async def test_a_swap_under_load_loses_no_request(rig: Start, tiny: Path, nc: NATS) -> None:
    """Requests through the router while tb is rotated out for tc (room for two: tb must go first): the
    requests tb holds are finished by tb before it unloads, auto-routed work keeps flowing, and every
    request ends in exactly one result."""
    models = tiny_models(tiny, {"ta": "fa", "tb": "fb", "tc": "fc"})
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta"], "rotation_pool": ["tb", "tc"]}},
                    "rotation_frequency": "1h"}}  # fmt: skip
    r = await rig(models=models, phases=phases, initial="p", room=2, router=True)
    await eventually(lambda: r.loaded() == {"ta": "hot", "tb": "hot"}, timeout=20)
    await eventually(lambda: _shown(r, "tb"))  # the router has seen it
    held = [request("tb", max_tokens=200) for _ in range(6)]
    finished: list[float] = []

    async def held_ask(q: Any) -> Any:
        out = await ask(nc, q, timeout=60)
        finished.append(time.monotonic())
        return out

    asks = [asyncio.ensure_future(held_ask(q)) for q in held]
    await eventually(lambda: _busy(r, "tb") >= 6, timeout=20)
    flowing: list[asyncio.Future[Any]] = []

    async def traffic() -> None:
        while True:
            flowing.append(asyncio.ensure_future(ask(nc, request(None), timeout=60)))
            flowing.append(asyncio.ensure_future(ask(nc, request("ta"), timeout=60)))
            await asyncio.sleep(0.1)

    pump = asyncio.ensure_future(traffic())
    rotated = time.monotonic()
    await r.rotator.send(Rotate(phase="p", by="test"))  # type: ignore[union-attr]
    await eventually(lambda: r.loaded() == {"ta": "hot", "tc": "hot"}, timeout=30)
    pump.cancel()
    outcomes = await asyncio.gather(*asks, *flowing)
    assert len(flowing) >= 4 and all(isinstance(o, GenerateResult) for o in outcomes)
    assert [o.model for o in outcomes[: len(held)]] == ["tb"] * len(held)  # finished by tb, not a reload
    assert max(finished) > rotated  # some were still generating when the swap began: the unload drained them
    assert len(r.events.of(ModelLoaded, model="tb")) == 1 and r.events.of(ModelUnloaded, model="tb")
    assert [await outcomes_stored(nc, o.request_id) for o in outcomes] == [1] * len(outcomes)


async def _shown(r: Rig, model: str, host: str = "cpu0") -> bool:
    state = await r.host_state(host)
    return state is not None and any(m.model == model and not m.draining for m in state.models)


def _busy(r: Rig, model: str) -> int:
    resident = r.hosts["cpu0"].manager.residents.get(model)
    return resident.engine.active + resident.engine.queued if resident else 0


SCALE = {"scale": {"queue_depth": 2, "sustained": "400ms", "idle_depth": 0, "idle_for": "1s",
                   "scale_up_models": ["tfast"], "max_extra_instances": 1}}  # fmt: skip


async def test_a_backlog_loads_another_instance_and_idleness_removes_it(rig: Start, tiny: Path, nc: NATS) -> None:
    """ta (one sequence at a time) gets a queue on cpu0: the rotator loads another instance on cpu1 (a
    scale event), and once the queue is gone and stays gone it unloads it again; ta on cpu0 stays."""
    models = {**tiny_models(tiny, {"ta": "fa"}, max_batch_size=1), **tiny_models(tiny, {"tfast": "ff"})}
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta"]}}}}
    r = await rig(models=models, phases=phases, initial="p", room=2, hosts=("cpu0", "cpu1"), rotator=SCALE, router=True)
    await eventually(lambda: "ta" in r.loaded("cpu0") or "ta" in r.loaded("cpu1"), timeout=20)
    home = "cpu0" if "ta" in r.loaded("cpu0") else "cpu1"
    other = "cpu1" if home == "cpu0" else "cpu0"
    await eventually(lambda: _shown(r, "ta", home))  # the router sends ta's work to the host that has it
    burst = [asyncio.ensure_future(ask(nc, request("ta", max_tokens=200), timeout=60)) for _ in range(16)]
    up = (await eventually(lambda: r.events.of(Scale, action="up"), timeout=30))[0]
    assert (up.model, up.host) == ("ta", other) and "backlog on ta" in up.reason
    await eventually(lambda: "ta" in r.loaded(other))
    assert all(isinstance(o, GenerateResult) for o in await asyncio.gather(*burst))
    down = (await eventually(lambda: r.events.of(Scale, action="down"), timeout=30))[0]
    assert (down.model, down.host) == ("ta", other)
    await eventually(lambda: "ta" not in r.loaded(other))
    assert r.loaded(home) == {"ta": "hot"}


async def test_a_backlog_loads_a_fast_model_where_there_is_room(rig: Start, tiny: Path, nc: NATS) -> None:
    """One host, room for two: a queue on ta (pinned to nothing else) brings the fast model tfast in,
    warm; idleness takes it out again."""
    models = {**tiny_models(tiny, {"ta": "fa"}, max_batch_size=1), **tiny_models(tiny, {"tfast": "ff"})}
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta"]}}}}
    r = await rig(models=models, phases=phases, initial="p", room=2, rotator=SCALE, router=True)
    await eventually(lambda: r.loaded() == {"ta": "hot"}, timeout=20)
    await eventually(lambda: _shown(r, "ta"))
    burst = [asyncio.ensure_future(ask(nc, request("ta", max_tokens=200), timeout=60)) for _ in range(16)]
    up = (await eventually(lambda: r.events.of(Scale, action="up"), timeout=30))[0]
    assert (up.model, up.host) == ("tfast", "cpu0") and "fast model tfast" in up.reason
    await eventually(lambda: r.loaded() == {"ta": "hot", "tfast": "warm"})
    await asyncio.gather(*burst)
    await eventually(lambda: r.events.of(Scale, action="down", model="tfast"), timeout=30)
    await eventually(lambda: r.loaded() == {"ta": "hot"})


async def test_a_backlog_without_room_overflows_to_the_cloud_and_switches_it_off_when_idle(
    rig: Start, tiny: Path, nc: NATS
) -> None:
    """Room for one model only: the backlog on ta cannot get help on a card, so the rotator asks the router
    to overflow ta's work to Together (SetOverflow), and switches it off when the queue is gone."""
    models = {**tiny_models(tiny, {"ta": "fa"}, max_batch_size=1), **tiny_models(tiny, {"tfast": "ff"})}
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta"]}}}}
    r = await rig(models=models, phases=phases, initial="p", room=1, rotator=SCALE, router=True)
    await eventually(lambda: r.loaded() == {"ta": "hot"}, timeout=20)
    await eventually(lambda: _shown(r, "ta"))
    burst = [asyncio.ensure_future(ask(nc, request("ta", max_tokens=200), timeout=60)) for _ in range(16)]
    on = (await eventually(lambda: r.of(SetOverflow, enabled=True), timeout=30))[0]
    assert (on.model, on.tier, on.by) == ("ta", "together", "rotator")
    await eventually(lambda: r.events.of(Scale, action="overflow_on", model="ta"))
    assert r.router is not None  # the rotator stored the switch in orch_overflow; the router watches it
    await eventually(lambda: r.router.view.overflow.tiers() == {"ta": "together"})
    await asyncio.gather(*burst)
    off = (await eventually(lambda: r.of(SetOverflow, enabled=False), timeout=30))[0]
    assert off.model == "ta"
    await eventually(lambda: r.events.of(Scale, action="overflow_off", model="ta"))
    await eventually(lambda: r.router.view.overflow.tiers() == {})
    assert not r.events.of(Scale, action="up")  # no card had room for tfast


async def test_a_failed_load_is_replanned_with_the_next_pool_model(rig: Start, tiny: Path, tmp_path: Path) -> None:
    """The first pick's file is missing: its load fails on the host, and the rotator plans again with the
    next model of the pool, which loads; the phase record names the replacement."""
    models = tiny_models(tiny, {"ta": "fa", "tb": "fb"})
    models["tgone"] = {**models["tb"], "family": "fg", "source": {"kind": "path", "path": str(tmp_path / "gone.gguf")}}
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta"], "rotation_pool": ["tgone", "tb"]}},
                    "rotation_frequency": "1h"}}  # fmt: skip
    r = await rig(models=models, phases=phases, initial="p", room=2)
    await eventually(lambda: r.loaded() == {"ta": "hot", "tb": "hot"}, timeout=30)
    assert r.events.of(ModelLoadFailed, model="tgone")
    replan = [e for e in r.events.of(RotationPlanned) if e.reason.startswith("re-plan after")]
    assert replan and "load tgone failed (load_failed" in replan[0].reason
    assert "cpu0: load tb hot" in replan[0].steps[0]
    state = await r.phase()
    assert state is not None and state.rotation == {"g": ["tb"]} and state.history[-1] == ["tb"]


async def test_a_host_restart_gets_the_phase_models_back(rig: Start, tiny: Path, nc: NATS) -> None:
    """A gpu_host that restarts comes back empty: the rotator sees its new start and loads the set again."""
    models = tiny_models(tiny, {"ta": "fa", "tb": "fb"})
    phases = {"p": {"groups": {"g": {"always_loaded": ["ta", "tb"]}}}}
    r = await rig(models=models, phases=phases, initial="p", room=2)
    await eventually(lambda: r.loaded() == {"ta": "hot", "tb": "hot"}, timeout=20)
    await r.hosts["cpu0"].stop(grace=1)
    r.hosts["cpu0"] = GpuHost(r.cfg, host="cpu0")
    await r.hosts["cpu0"].start(nc)
    await eventually(lambda: r.loaded() == {"ta": "hot", "tb": "hot"}, timeout=20)
    assert any("host cpu0 started" in e.reason for e in r.events.of(RotationPlanned))
