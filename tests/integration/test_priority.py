"""Request priority on a busy model: real llama.cpp (SmolLM2), one sequence slot, work waiting for it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.gpu_host.engine import Generation, GenParams, LoadSpec
from actors.gpu_host.llama_engine import LlamaCppEngine
from schemas.base import priority_rank
from schemas.config import load_config
from tests.support.wait import eventually
from weights.library import ModelLibrary

pytestmark = pytest.mark.slow


@pytest.fixture
async def one_slot() -> AsyncIterator[LlamaCppEngine]:
    path = ModelLibrary(load_config("local"), Path("/nonexistent")).resolve("smollm2-135m").path
    engine = LlamaCppEngine(LoadSpec(name="smollm2-135m", path=path, context=256, batch=1))
    await engine.start()
    yield engine
    await engine.stop()


async def test_a_high_priority_request_queued_behind_low_ones_is_served_before_them(one_slot: LlamaCppEngine) -> None:
    """The only slot is busy; two low requests wait, then a high one arrives: when the slot frees, the
    high one is admitted first, and the lows follow in their own order (order asserted, not time)."""
    finished: list[str] = []

    def submit(name: str, priority: str) -> Generation:
        params = GenParams(max_tokens=16, temperature=0.0)
        gen = one_slot.submit(f"Story {name}:", params, deadline=time.time() + 60, rank=priority_rank(priority))
        gen.on_settled(lambda _g: finished.append(name))
        return gen

    busy = submit("low-0", "low")
    await eventually(lambda: one_slot.active == 1, interval=0.005)
    with one_slot._cv:  # the engine thread cannot admit anything until all three wait together
        waiting = [submit("low-1", "low"), submit("low-2", "low"), submit("high", "high")]
        assert one_slot.queued == 3
    for gen in [busy, *waiting]:
        assert (await gen.result()).output_tokens > 0
    assert finished == ["low-0", "high", "low-1", "low-2"]
