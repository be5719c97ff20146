"""Cache policy (pure): which requests may be answered from the cache or stored, and eviction.

    decide(request, enabled)  -> Decision(lookup, store, reason)
    storable(result)          -> None, or why that result is not kept
    Lru                       least-recently-used order with a size cap and TTL expiry

Diversity is the point of ``diverse`` and ``ensemble`` requests, so they never touch the cache. Sampled
requests (temperature > 0) are cached only when the request opts in with ``cache.allow_sampled``. Prompts
over :data:`MAX_PROMPT_CHARS` are not cached: normalising a megabyte takes the cache's event loop ~0.1 s
(every other lookup would wait), and such prompts hardly repeat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.request import GenerateRequest
from schemas.result import GenerateResult

FAN_OUT_MODELS = ("diverse", "ensemble")
MAX_PROMPT_CHARS = 32_000


@dataclass(frozen=True)
class Decision:
    lookup: bool  # may be answered from the cache
    store: bool  # its answer may be stored
    reason: str = ""  # why not, when either is False


def decide(req: GenerateRequest, *, enabled: bool = True) -> Decision:
    if not enabled:
        return Decision(False, False, "cache disabled")
    if req.mode != "single" or (req.model or "") in FAN_OUT_MODELS:
        return Decision(False, False, f"{req.model if req.model in FAN_OUT_MODELS else req.mode} mode")
    if req.sampling.temperature > 0 and not req.cache.allow_sampled:
        return Decision(False, False, f"sampled at temperature {req.sampling.temperature:g} without allow_sampled")
    size = len(req.prompt or "") + sum(len(m.content) for m in req.messages or ())
    if size > MAX_PROMPT_CHARS:
        return Decision(False, False, f"prompt of {size} characters (over {MAX_PROMPT_CHARS})")
    lookup, store = not req.cache.no_cache, not req.cache.no_store
    reason = ", ".join(n for n, off in (("no_cache", not lookup), ("no_store", not store)) if off)
    return Decision(lookup, store, reason)


def storable(result: GenerateResult) -> str | None:
    """None when the result may be stored; otherwise why not."""
    if result.cached:
        return "already a cached answer"
    if result.responses or result.consensus is not None:
        return "a fan-out answer"
    if result.parent_id is not None:
        return "a fan-out child"
    if result.finish_reason == "cancelled":
        return "cancelled"
    if not result.text.strip():
        return "empty text"
    return None


class Lru:
    """Keys in least-recently-used order, each with the time it was stored.

    ``add`` returns the keys to evict to stay within ``cap``; ``touch`` marks a hit; ``expired`` lists
    keys older than a TTL. No I/O: the caller deletes what it is told to."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self._order: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def keys(self) -> list[str]:
        """Least recently used first."""
        return list(self._order)

    def load(self, items: Iterable[tuple[str, float]]) -> list[str]:
        """Seed from stored entries, oldest first; returns the keys beyond the cap."""
        for key, stored_at in sorted(items, key=lambda kv: kv[1]):
            self._order[key] = stored_at
            self._order.move_to_end(key)
        return self._overflow()

    def add(self, key: str, stored_at: float) -> list[str]:
        self._order[key] = stored_at
        self._order.move_to_end(key)
        return self._overflow()

    def touch(self, key: str) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def discard(self, key: str) -> None:
        self._order.pop(key, None)

    def expired(self, now: float, ttl: float) -> list[str]:
        return [key for key, stored_at in self._order.items() if stored_at + ttl <= now]

    def _overflow(self) -> list[str]:
        victims = []
        while len(self._order) > self.cap:
            key, _ = self._order.popitem(last=False)
            victims.append(key)
        return victims
