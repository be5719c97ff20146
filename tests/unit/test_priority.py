"""Request priority: the rank of each priority token and the order in which a busy engine admits work."""

from __future__ import annotations

from pathlib import Path

from actors.gpu_host.engine import GenParams, LoadSpec, ThreadEngine
from schemas.base import PRIORITIES, priority_rank


def test_priority_ranks_follow_the_declared_order_and_unknown_tokens_come_last() -> None:
    """high < normal < low < batch, and a token nobody declared waits behind all of them."""
    assert [priority_rank(p) for p in PRIORITIES] == [0, 1, 2, 3]
    assert priority_rank("urgent") == len(PRIORITIES)


async def test_waiting_generations_leave_by_priority_then_by_arrival() -> None:
    """With no free slot, the queue holds every submission; each take hands out the highest priority
    first and keeps submission order within a priority (no thread runs: the test takes by hand)."""
    engine = ThreadEngine(LoadSpec(name="m", path=Path("/nonexistent"), context=64, batch=1))
    order = [("low-1", 2), ("batch-1", 3), ("normal-1", 1), ("low-2", 2), ("high-1", 0), ("normal-2", 1)]
    gens = {name: engine.submit(name, GenParams(), deadline=1e12, rank=rank) for name, rank in order}
    names = {id(g): n for n, g in gens.items()}
    taken = [names[id(g)] for g in engine._take(2)] + [names[id(g)] for g in engine._take(10)]
    assert taken == ["high-1", "normal-1", "normal-2", "low-1", "low-2", "batch-1"]
    assert engine._take(1) == [] and engine.queued == 0
