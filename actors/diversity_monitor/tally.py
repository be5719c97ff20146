"""Bounded aggregates of what the monitor saw: its memory does not grow with traffic. Pure: time is
always passed in, nothing here does I/O.

    series = Series(resolution=1.0, span=3600.0)
    series.at(t).add_request(ok=True, cached=False, tier="local", cost_usd=0.0, latency_ms=12.0)
    series.at(t).add_answer(family="llama", model="m", variant=None, code=False, temperature=0.7)
    total = series.total(since, now)          one Bucket merging every bucket inside (since, now]
    series.prune(cutoff)

A Series is a deque of time buckets (``resolution`` seconds each, aligned to the epoch), created only
for seconds in which something arrived and dropped once older than the horizon: at most
``span / resolution`` buckets, each a handful of counters, whatever the request rate. Window figures are
exact up to one bucket at each edge (a bucket counts when any of it lies inside the window). Latencies
go into a log-scale histogram: a quantile is within LATENCY_RATIO / 2 (1 %) of the exact one.

    samples = Samples(per_group=200, groups=500, total=10_000)   the answers the pairwise metrics compare
    ids = RecentIds(cap=20_000)                                  "seen this answer already?" for re-deliveries
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from actors.diversity_monitor.diversity import Answer

LATENCY_RATIO = 1.02  # histogram bins: each 2 % wider than the last
_LOG_RATIO = math.log(LATENCY_RATIO)
MIN_MS = 1e-3


def latency_bin(ms: float) -> int:
    return math.floor(math.log(max(ms, MIN_MS)) / _LOG_RATIO)


def bin_value(b: int) -> float:
    """The geometric middle of a bin: within 1 % of every latency in it."""
    return float(LATENCY_RATIO ** (b + 0.5))


def quantile_of(hist: Counter[int], q: float) -> float | None:
    """The q-quantile (nearest rank, as ``board.quantile``) of a latency histogram, in ms."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = max(0, min(n - 1, int(q * n + 0.999999) - 1))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen > rank:
            return bin_value(b)
    return bin_value(max(hist))  # pragma: no cover - the loop always reaches the rank


@dataclass(slots=True)
class TierTally:
    answered: int = 0  # successful, not from the cache
    cost_usd: float = 0.0  # of those
    latency: Counter[int] = field(default_factory=Counter)  # latency_bin -> answers


@dataclass(slots=True)
class Bucket:
    """Counters for one slice of time (or, merged, for a window)."""

    start: float = 0.0
    requests: int = 0
    cached: int = 0
    errors: int = 0
    by_label: Counter[str] = field(default_factory=Counter)  # "cache" / tier / "error" -> requests
    tiers: dict[str, TierTally] = field(default_factory=dict)
    spend_usd: float = 0.0  # paid tiers, results and failed attempts
    answers: int = 0
    families: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    code_answers: int = 0
    temps: int = 0
    temp_sum: float = 0.0
    temp_sq: float = 0.0

    def add_request(
        self,
        *,
        ok: bool,
        cached: bool = False,
        tier: str = "",
        cost_usd: float = 0.0,
        latency_ms: float | None = None,
    ) -> None:
        """``latency_ms`` None: not kept here (a histogram is ~100 bins: only the short latency series has them)."""
        self.requests += 1
        self.cached += cached
        self.errors += not ok
        self.by_label["cache" if cached else (tier or "error")] += 1
        if ok and not cached:
            t = self.tiers.get(tier or "?")
            if t is None:
                t = self.tiers[tier or "?"] = TierTally()
            t.answered += 1
            t.cost_usd += cost_usd
            if latency_ms is not None:
                t.latency[latency_bin(latency_ms)] += 1

    def add_answer(self, a: Answer) -> None:
        self.answers += 1
        self.families[a.family] += 1
        self.models[a.model] += 1
        if a.prompt_variant:
            self.variants[a.prompt_variant] += 1
        self.code_answers += a.shape is not None
        if a.temperature is not None:
            self.temps += 1
            self.temp_sum += a.temperature
            self.temp_sq += a.temperature * a.temperature

    def merge(self, b: Bucket) -> None:
        self.requests += b.requests
        self.cached += b.cached
        self.errors += b.errors
        self.by_label.update(b.by_label)
        for name, t in b.tiers.items():
            mine = self.tiers.setdefault(name, TierTally())
            mine.answered += t.answered
            mine.cost_usd += t.cost_usd
            mine.latency.update(t.latency)
        self.spend_usd += b.spend_usd
        self.answers += b.answers
        self.families.update(b.families)
        self.models.update(b.models)
        self.variants.update(b.variants)
        self.code_answers += b.code_answers
        self.temps += b.temps
        self.temp_sum += b.temp_sum
        self.temp_sq += b.temp_sq

    @property
    def temperature_variance(self) -> float | None:
        if not self.temps:
            return None
        mean = self.temp_sum / self.temps
        return max(0.0, self.temp_sq / self.temps - mean * mean)


class Series:
    """Time buckets over a trailing span (see the module docstring)."""

    def __init__(self, resolution: float, span: float) -> None:
        self.resolution = max(1e-3, resolution)
        self.span = span
        self.buckets: deque[Bucket] = deque()

    def at(self, t: float) -> Bucket:
        """The bucket holding time ``t`` (made when missing; records may arrive a little out of order)."""
        start = math.floor(t / self.resolution) * self.resolution
        if not self.buckets or self.buckets[-1].start < start:
            self.buckets.append(Bucket(start=start))
            return self.buckets[-1]
        for i in range(len(self.buckets) - 1, -1, -1):  # late: almost always the last bucket or close to it
            b = self.buckets[i]
            if b.start == start:
                return b
            if b.start < start:
                self.buckets.insert(i + 1, Bucket(start=start))
                return self.buckets[i + 1]
        self.buckets.appendleft(Bucket(start=start))
        return self.buckets[0]

    def window(self, since: float, now: float) -> Iterator[Bucket]:
        """The buckets that overlap (since, now], newest first."""
        for b in reversed(self.buckets):
            if b.start + self.resolution <= since:
                break
            if b.start <= now:
                yield b

    def total(self, since: float, now: float) -> Bucket:
        out = Bucket(start=since)
        for b in self.window(since, now):
            out.merge(b)
        return out

    def prune(self, cutoff: float) -> None:
        while self.buckets and self.buckets[0].start + self.resolution <= cutoff:
            self.buckets.popleft()


class RecentIds:
    """The last ``cap`` ids seen: a re-delivered or repeated answer comes soon after the first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.order: deque[str] = deque()
        self.ids: set[str] = set()

    def claim(self, key: str) -> bool:
        if key in self.ids:
            return False
        self.ids.add(key)
        self.order.append(key)
        if len(self.order) > self.cap:
            self.ids.discard(self.order.popleft())
        return True

    def __len__(self) -> int:
        return len(self.ids)


class VectorRows:
    """The sampled answers' embeddings in one matrix of ``rows`` rows, made and written when the first
    vector comes: a sampled answer's vector is copied into a free row and the answer kept with a view of
    it; its row is free again when it leaves the samples. So the samples' largest part (a 384-float
    vector each, 10,000 answers: ~15 MB) is taken at once instead of growing as the samples fill, and
    no array per answer is left to the allocator. A view handed out (``Samples.window``) is read at once,
    before the next answer comes: a freed row is written again."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.matrix: np.ndarray | None = None
        self.free: list[int] = []
        self.row_of: dict[int, int] = {}  # id(answer kept) -> its row

    def keep(self, a: Answer) -> Answer:
        if a.vector is None:
            return a
        vector = np.asarray(a.vector, dtype=np.float32).reshape(-1)
        if self.matrix is None:
            self.matrix = np.zeros((self.rows, len(vector)), dtype=np.float32)
            self.matrix.fill(0.0)  # written now: resident from the first sampled answer on
            self.free = list(range(self.rows - 1, -1, -1))
        if len(vector) != self.matrix.shape[1] or not self.free:
            return a  # another embedder's width (or no row left): the answer keeps its own array
        row = self.free.pop()
        self.matrix[row] = vector
        kept = replace(a, vector=self.matrix[row])
        self.row_of[id(kept)] = row
        return kept

    def release(self, answers: Iterable[Answer]) -> None:
        for a in answers:
            row = self.row_of.pop(id(a), None)
            if row is not None:
                self.free.append(row)


class Samples:
    """The most recent answers of each group (task or fan-out), for the pairwise figures: at most
    ``per_group`` per group, ``groups`` groups (the least recently answered go first) and ``total``
    answers in all; their vectors in :class:`VectorRows`."""

    def __init__(self, per_group: int, groups: int, total: int) -> None:
        self.per_group, self.max_groups, self.max_total = per_group, groups, total
        self.groups: OrderedDict[str, deque[Answer]] = OrderedDict()
        self.count = 0
        self.vectors = VectorRows(total + 1)  # one more: an answer comes in before the oldest goes

    def add(self, a: Answer) -> None:
        group = a.group
        if group is None:
            return
        q = self.groups.get(group)
        if q is None:
            q = self.groups[group] = deque()
        else:
            self.groups.move_to_end(group)
        q.append(self.vectors.keep(a))
        self.count += 1
        if len(q) > self.per_group:
            self.vectors.release((q.popleft(),))
            self.count -= 1
        while len(self.groups) > self.max_groups or self.count > self.max_total:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        group, q = next(iter(self.groups.items()))
        if len(q) <= 1 or len(self.groups) > self.max_groups:
            del self.groups[group]
            self.count -= len(q)
            self.vectors.release(q)
        else:
            self.vectors.release((q.popleft(),))
            self.count -= 1

    def window(self, since: float, now: float) -> list[Answer]:
        out = [a for q in self.groups.values() for a in q if since <= a.at <= now]
        out.sort(key=lambda a: a.at)
        return out

    def prune(self, cutoff: float) -> None:
        for group in list(self.groups):
            q = self.groups[group]
            while q and q[0].at < cutoff:
                self.vectors.release((q.popleft(),))
                self.count -= 1
            if not q:
                del self.groups[group]

    def __iter__(self) -> Iterator[Answer]:
        return iter(sorted((a for q in self.groups.values() for a in q), key=lambda a: a.at))
