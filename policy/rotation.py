"""The rotation choice, pure: which models of each rotation pool to load next.

    choose(phase, families, history, recent_window, exclude=(), keep={}) -> {group: [model, ...]}

For each group (in config order) it picks ``rotation_size`` models of the pool that

1. were not chosen in the last ``recent_window`` rotations (``history``, newest last) — when the pool has
   too few such models, the ones chosen longest ago fill the gap;
2. maximise model-family diversity with everything else the phase loads: its always-loaded models and the
   picks of the groups before (most distinct families first, then the most even spread);
3. among equals, were chosen longest ago (never chosen counts as longest), then come first in the pool.

So a pool walks round (a, b, c, a, ... with a window of two), and a family already loaded is passed over
while another family is available. ``exclude`` drops models that cannot be loaded now (a failed load,
no room on any card); ``keep`` holds the picks of groups that stay as they are (a re-choice after a
failure changes only the groups that lost a model).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from schemas.config.ops import PhaseCfg

MAX_COMBINATIONS = 20_000  # beyond this (huge pools), picks are made one at a time
NEVER = 1_000_000  # the age of a model never chosen


def ages(history: Sequence[Sequence[str]]) -> dict[str, int]:
    """Rotations since each model was last chosen (1 = the latest rotation)."""
    out: dict[str, int] = {}
    for age, picks in enumerate(reversed(history), start=1):
        for model in picks:
            out.setdefault(model, age)
    return out


def choose(
    phase: PhaseCfg,
    families: Mapping[str, str],
    history: Sequence[Sequence[str]],
    recent_window: int,
    exclude: Collection[str] = (),
    keep: Mapping[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    recent = {m for picks in (history[-recent_window:] if recent_window > 0 else []) for m in picks}
    age = ages(history)
    present = Counter(families.get(m, m) for g in phase.groups.values() for m in g.always_loaded)
    kept = {g: list(p) for g, p in (keep or {}).items() if g in phase.groups}
    for picks in kept.values():
        present.update(families.get(m, m) for m in picks)
    out: dict[str, list[str]] = {}
    for gname, group in phase.groups.items():
        if gname in kept:
            out[gname] = kept[gname]
            continue
        pool = [m for m in dict.fromkeys(group.rotation_pool) if m not in exclude]
        k = min(group.rotation_size, len(pool))
        if k <= 0:
            continue
        picks = _best(pool, k, present, families, recent, age)
        out[gname] = picks
        present.update(families.get(m, m) for m in picks)
    return out


def _score(
    combo: Sequence[str],
    pool: Sequence[str],
    present: Counter[str],
    families: Mapping[str, str],
    recent: set[str],
    age: Mapping[str, int],
) -> tuple[int, int, int, int, tuple[int, ...]]:
    counts = present + Counter(families.get(m, m) for m in combo)
    return (
        sum(m in recent for m in combo),  # fewer recent models
        -len(counts),  # more distinct families
        sum(n * n for n in counts.values()),  # a more even spread
        -sum(min(age.get(m, NEVER), NEVER) for m in combo),  # chosen longest ago
        tuple(sorted(pool.index(m) for m in combo)),  # then pool order
    )


def _best(
    pool: list[str],
    k: int,
    present: Counter[str],
    families: Mapping[str, str],
    recent: set[str],
    age: Mapping[str, int],
) -> list[str]:
    def key(combo: Sequence[str]) -> tuple[int, int, int, int, tuple[int, ...]]:
        return _score(combo, pool, present, families, recent, age)

    if _combinations(len(pool), k) <= MAX_COMBINATIONS:
        best = min(itertools.combinations(pool, k), key=key)
        return sorted(best, key=pool.index)
    picks: list[str] = []
    for _ in range(k):
        nxt = min((m for m in pool if m not in picks), key=lambda m: key([*picks, m]))
        picks.append(nxt)
    return sorted(picks, key=pool.index)


def _combinations(n: int, k: int) -> int:
    out = 1
    for i in range(k):
        out = out * (n - i) // (i + 1)
    return out
