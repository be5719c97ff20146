"""Answers on their way: the misses of this cache instance whose answers are being generated or stored.

A lookup that misses both layers but matches one of them — the same exact key, or a prompt the verifier
accepts at the same cosine floor, in the same scope — waits a little (``cache.coalesce_wait``) for that
answer to be stored instead of missing. Without it, a rewording asked right after its original's answer
reached the client misses whenever the cache has not stored that answer yet (it takes the result from the
RESULTS stream a few milliseconds, and up to a consumer batch, after the gateway); and two identical
requests in flight at once are both generated. Per instance, in memory, bounded: ``cap`` entries at most
(the oldest is dropped first), each until its request's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from schemas.cache import PendingStore


@dataclass
class Awaited:
    pending: PendingStore  # what the cache remembers of the miss (its key, scope, vector, deadline)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0  # lookups waiting for it now
    vector: np.ndarray | None = field(init=False)

    def __post_init__(self) -> None:
        raw = self.pending.vector
        self.vector = np.frombuffer(raw, np.float32) if raw is not None else None


@dataclass(frozen=True)
class Match:
    awaited: Awaited
    similarity: float  # 1.0 for the same exact key


class InFlight:
    def __init__(self, cap: int = 1024) -> None:
        self.cap = cap
        self._by_id: dict[str, Awaited] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, pending: PendingStore) -> Awaited:
        self.settle(pending.request_id)
        while len(self._by_id) >= self.cap:
            self.settle(next(iter(self._by_id)))
        awaited = self._by_id[pending.request_id] = Awaited(pending)
        return awaited

    def settle(self, request_id: str) -> None:
        """The request's answer was stored, or will not be: whoever waits for it looks again now."""
        awaited = self._by_id.pop(request_id, None)
        if awaited is not None:
            awaited.done.set()

    def expire(self, now: float) -> int:
        late = [rid for rid, a in self._by_id.items() if a.pending.deadline <= now]
        for rid in late:
            self.settle(rid)
        return len(late)

    def match(
        self,
        request_id: str,
        key: str,
        scope: str,
        vector: np.ndarray | None,
        accepts: Callable[[str, float], bool],
        floor: float,
    ) -> Match | None:
        """The best answer on its way for this lookup: the same key first, else the verified closest."""
        best: Match | None = None
        for awaited in self._by_id.values():
            p = awaited.pending
            if p.request_id == request_id or p.scope != scope:
                continue
            if p.key == key:
                return Match(awaited, 1.0)
            if vector is None or awaited.vector is None or p.guard_text is None:
                continue
            cosine = float(awaited.vector @ vector)
            if cosine >= floor and (best is None or cosine > best.similarity) and accepts(p.guard_text, cosine):
                best = Match(awaited, cosine)
        return best
