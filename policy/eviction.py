"""Which models to unload: eviction for a load that needs room, and keep-alive expiry. Pure.

Keep-alive tiers (Mirador's tiered warming): ``hot`` models are pinned (loaded at start, never evicted,
only an explicit unload removes them); ``warm`` ones stay loaded until idle for their keep-alive TTL;
``cold`` ones are loaded on demand and unloaded as soon as they are idle.

Eviction weighs what a model would cost to bring back against how much it is used: each use adds one to a
count that halves every ``half_life`` seconds, and

    value = decayed uses x (measured load time + RELOAD_FLOOR_S)

The model of least value goes first (cold ones before warm ones, busy and hot ones never). A model used
often (A in A B A A C) keeps its place against one used once, and a model that takes long to load is
kept over a quick one used as often.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HALF_LIFE_S = 600.0
RELOAD_FLOOR_S = 0.5  # every reload costs at least this much (the request waits, caches are cold)


@dataclass(frozen=True)
class Usage:
    """What the policy knows of a model: decayed use count as of ``updated`` (epoch seconds)."""

    uses: float = 0.0
    updated: float = 0.0
    last_used: float = 0.0

    def decayed(self, now: float, half_life: float = HALF_LIFE_S) -> float:
        if self.uses <= 0.0:
            return 0.0
        return self.uses * math.pow(0.5, max(0.0, now - self.updated) / half_life)

    def used(self, now: float, half_life: float = HALF_LIFE_S) -> Usage:
        return Usage(uses=self.decayed(now, half_life) + 1.0, updated=now, last_used=now)


@dataclass(frozen=True)
class Resident:
    """A loaded model as the policy sees it."""

    name: str
    bytes_by_card: dict[str, int]
    keep_alive: str  # hot | warm | cold
    busy: bool  # requests in flight or queued
    usage: Usage
    load_s: float  # measured time to load it again
    loaded_at: float = 0.0


def value(r: Resident, now: float, half_life: float = HALF_LIFE_S) -> float:
    return r.usage.decayed(now, half_life) * (r.load_s + RELOAD_FLOOR_S)


def evictable(r: Resident) -> bool:
    return r.keep_alive != "hot" and not r.busy


def eviction_order(residents: Sequence[Resident], now: float, half_life: float = HALF_LIFE_S) -> list[Resident]:
    """Evictable models, first to go first: cold before warm, then least value, then least recently used."""
    candidates = [r for r in residents if evictable(r)]
    return sorted(
        candidates,
        key=lambda r: (r.keep_alive != "cold", value(r, now, half_life), r.usage.last_used, r.name),
    )


def choose_victims(
    residents: Sequence[Resident],
    fits: Callable[[frozenset[str]], bool],
    now: float,
    half_life: float = HALF_LIFE_S,
) -> list[str] | None:
    """The fewest least-valuable models whose unloading makes ``fits(unloaded)`` true, or None.
    ``fits`` answers whether the new model fits once the named models are gone."""
    chosen: list[str] = []
    if fits(frozenset()):
        return chosen
    for r in eviction_order(residents, now, half_life):
        chosen.append(r.name)
        if fits(frozenset(chosen)):
            return _drop_unneeded(chosen, fits)
    return None


def _drop_unneeded(chosen: list[str], fits: Callable[[frozenset[str]], bool]) -> list[str]:
    """Keep a victim only if the load does not fit without it (most valuable victims are tried first)."""
    kept = list(chosen)
    for name in reversed(chosen[:-1]):
        trial = frozenset(n for n in kept if n != name)
        if fits(trial):
            kept.remove(name)
    return kept


def expired(residents: Sequence[Resident], now: float, ttl: Callable[[str], float]) -> list[str]:
    """Models to unload now: idle warm models past their TTL, idle cold models at once."""
    out = []
    for r in residents:
        if r.busy or r.keep_alive == "hot":
            continue
        idle_since = max(r.usage.last_used, r.loaded_at)
        limit = 0.0 if r.keep_alive == "cold" else ttl(r.name)
        if now - idle_since >= limit:
            out.append(r.name)
    return out
