"""The rotator on the local profile's real models (SmolLM2-135M and Gemma 3 270M from PyPI) and a real
gpu_host and router (in this process), rotating every few seconds (ORCHESTRA_ROTATION_EVERY) in phase 2,
where the model out of the rotation is cold: each rotation unloads it, requests bring it back."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from bus.server import EmbeddedNats
from schemas.events import ModelLoaded, ModelUnloaded, RotationPlanned
from schemas.request import Sampling, make_request
from schemas.result import GenerateResult, Outcome
from tests.support.actors import Actors
from tests.support.client import ask, outcomes_stored
from tests.support.gpu_host import host_profile
from tests.support.rotator import Rig
from tests.support.wait import eventually

pytestmark = pytest.mark.slow  # real models, a gpu_host, the router and the rotator

PHASE = "phase_2_context_engineering"
MODELS = ("smollm2-135m", "gemma3-270m")
ROTATIONS = 4


@pytest.fixture(scope="module")
def model_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma is assembled from its chunk packages once for the module."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
async def rig(
    tmp_path: Path, nats_server: EmbeddedNats, actors: Actors, model_data: Path, monkeypatch: pytest.MonkeyPatch
) -> Rig:
    """The local profile as shipped (both models hot in the library), in phase 2, rotating every 3 s."""
    monkeypatch.setenv("ORCHESTRA_ROTATION_EVERY", "3s")
    profile = host_profile(
        tmp_path / "profile", nats_server.url, {}, real_models="hot",
        overrides={"data_dir": str(model_data), "rotator": {"initial_phase": PHASE, "step_timeout": "20s"}},
    )  # fmt: skip
    r = await Rig.start(actors, profile, router=True)
    assert r.cfg.phases[PHASE].rotation_frequency == 3
    return r


def _request(model: str | None) -> Any:
    return make_request(prompt="The capital of France is", model=model, timeout_s=60,
                        sampling=Sampling(max_tokens=6, temperature=0.0))  # fmt: skip


async def _rotations(r: Rig, n: int) -> bool:
    state = await r.phase()
    return state is not None and state.phase == PHASE and state.rotations >= n


async def test_phase_2_rotation_swaps_the_real_models_while_every_request_is_answered(rig: Rig, nc: NATS) -> None:
    """Every 3 s the pick changes: the model rotated out (cold in phase 2) is unloaded, the other loaded or
    pinned, and named requests load the cold one again on demand. Requests for either model and
    auto-routed ones, sent all along, each end in exactly one result."""
    await eventually(lambda: _rotations(rig, 1), timeout=30)
    asks: list[asyncio.Future[Outcome]] = []

    async def traffic() -> None:
        while True:
            for model in (*MODELS, None):
                asks.append(asyncio.ensure_future(ask(nc, _request(model), timeout=60)))
                await asyncio.sleep(0.25)

    pump = asyncio.ensure_future(traffic())
    try:
        await eventually(lambda: _rotations(rig, 1 + ROTATIONS), timeout=40)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    outcomes = await asyncio.gather(*asks)
    errors = [o for o in outcomes if not isinstance(o, GenerateResult)]
    assert len(outcomes) >= 12 and not errors, errors
    assert {o.model for o in outcomes} == set(MODELS)
    assert [await outcomes_stored(nc, o.request_id) for o in outcomes] == [1] * len(outcomes)

    state = await rig.phase()
    assert state is not None
    picks = [p[0] for p in state.history[-ROTATIONS:]]
    assert all(a != b for a, b in zip(picks, picks[1:], strict=False))  # the pool of two alternates
    rotated = [e for e in rig.events.of(RotationPlanned) if "scheduled rotation" in e.reason]
    assert len(rotated) >= ROTATIONS - 1
    for model in MODELS:
        unloads = [e for e in rig.events.of(ModelUnloaded, model=model) if "rotation" in e.reason]
        assert unloads, f"{model} was never unloaded by a rotation"
        assert len(rig.events.of(ModelLoaded, model=model)) >= 2  # loaded again after being rotated out
