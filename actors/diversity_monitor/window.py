"""What the monitor has seen, kept for a trailing horizon, and the alert metrics over it. Pure: time is
always passed in, nothing here does I/O.

    obs = Observations(horizon=3600, tz=ZoneInfo("UTC"))
    obs.add_outcome(result, at)        a final outcome (answers come separately: answers_of + add_answers)
    obs.add_failure(attempt_failed, at)
    obs.add_event(event, at)           Oom, CostSpike, BudgetThreshold, DiversityLow are kept; the rest is not needed
    obs.measure("cache_hit_rate", 3600, now, live) -> Measure(value, samples)

Requests are outcomes of single calls: a fan-out's children count, its combined result does not (so a
paid call is spent, and a request counted, exactly once). OOMs are the
gpu_hosts' ``oom`` events plus failed attempts with code ``oom`` that no event reported.

Memory is bounded whatever the traffic (``tally``): counters in 1 s buckets (coarser past an hour),
latency histograms for the last LATENCY_SPAN, today's spend per minute, at most MAX_SAMPLED answers
sampled for the pairwise figures (MAX_GROUP per task), the last RECENT_IDS answer ids. Window figures
are exact up to one bucket at each edge; latency quantiles within 1 %; per-task figures cover each
task's most recent MAX_GROUP answers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from actors.diversity_monitor.diversity import (
    MAX_GROUP,
    MAX_TEXT,
    Answer,
    Summary,
    evenness,
    structure,
    summarise,
)
from actors.diversity_monitor.tally import Bucket, RecentIds, Samples, Series
from policy.consensus.code import code_of
from schemas.events import BudgetThreshold, CostSpike, DiversityLow, Event, Oom
from schemas.result import AttemptFailed, GenerateResult, Outcome, Provenance
from schemas.state import HostState, QueueState, TierState

PAID_TIERS = ("together", "premium")
QUEUE_STALE_S = 30.0  # a queue record older than this is not current (the router writes every 2 s)
BUDGET_MARKS_S = 7 * 86400.0  # thresholds crossed are kept this long (rare; a rule's window may be days)
HOST_STALE_S = 15.0  # a host whose heartbeat is older than this (and > 3 heartbeats) is not up
FINE_SPAN = 3600.0  # 1 s buckets this far back
LATENCY_SPAN = 600.0  # latency histograms this far back (the dashboard's rate_window; 60 s by default)
MAX_BUCKETS = 3600  # a longer horizon gets coarser buckets: horizon / MAX_BUCKETS seconds each
SPEND_RESOLUTION = 60.0  # today's spend in minutes (a day starts on a whole minute in every zone)
MAX_GROUPS = 500  # tasks / fan-outs whose answers are sampled (the least recently answered go first)
MAX_SAMPLED = 10_000  # sampled answers in all (text + embedding each: a few KB)
RECENT_IDS = 20_000  # answer ids remembered to skip repeats (fan-out responses, re-deliveries)
MAX_RECORDS = 10_000  # OOMs, spikes, thresholds and diversity.low events kept (rare: a safety cap)


@dataclass(frozen=True)
class Measure:
    value: float | None  # None: unknown (no data)
    samples: int | None = None  # requests / answers behind a rate; None: a gauge (always enough)
    detail: str | None = None  # what the figure is about, for the alert's context (e.g. which budgets)


@dataclass(frozen=True)
class OomRec:
    at: float
    host: str
    card: str
    model: str
    request_id: str | None = None
    from_event: bool = True


@dataclass(frozen=True)
class LiveState:
    """The KV views at one instant (plain data)."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    queues: dict[str, QueueState] = field(default_factory=dict)
    tiers: dict[str, TierState] = field(default_factory=dict)
    heartbeat_s: float = 2.0

    def hosts_up(self, now: float) -> list[HostState]:
        stale = max(HOST_STALE_S, 3 * self.heartbeat_s)
        return [h for h in self.hosts.values() if h.up and now - h.heartbeat_at <= stale]

    def current_queues(self, now: float) -> list[QueueState]:
        return [q for q in self.queues.values() if now - q.updated_at <= QUEUE_STALE_S]


def answers_of(outcome: Outcome, at: float) -> list[Answer]:
    """The answers in a result: its own text, or each response of a fan-out (without vectors)."""
    if not isinstance(outcome, GenerateResult):
        return []
    if outcome.responses:
        group = outcome.task or outcome.request_id
        return [_answer(at, r.request_id, r.provenance, group, r.text) for r in outcome.responses]
    if not outcome.text and not outcome.tool_calls:
        return []  # nothing to compare (a cloud embeddings charge, an empty answer): spend and counts only
    own = Provenance(model=outcome.model, family=outcome.family, tier=outcome.tier, target=outcome.target)
    p = outcome.provenance or own
    if (p.model, p.family) != (own.model, own.family):  # the result's own model is the truth
        p = Provenance(
            model=own.model,
            family=own.family,
            tier=own.tier,
            target=own.target,
            temperature=p.temperature,
            top_p=p.top_p,
            prompt_variant=p.prompt_variant,
        )
    return [_answer(at, outcome.request_id, p, outcome.task or outcome.parent_id, outcome.text)]


def _answer(at: float, request_id: str, p: Provenance, group: str | None, text: str) -> Answer:
    text = text[:MAX_TEXT]
    return Answer(
        at=at,
        request_id=request_id,
        model=p.model,
        family=p.family,
        tier=p.tier,
        group=group,
        temperature=p.temperature,
        top_p=p.top_p,
        prompt_variant=p.prompt_variant,
        text=text,
        shape=structure(code_of(text)),
    )


def is_fanout(outcome: Outcome) -> bool:
    return isinstance(outcome, GenerateResult) and bool(outcome.responses)


class Observations:
    """What was seen over the horizon, as bounded aggregates (``tally``): per-second counters for the
    rates, spend, latencies and answer mix, and a capped sample of answers per task for the pairwise
    diversity figures. Its memory does not grow with the request rate."""

    def __init__(self, horizon: float, tz: ZoneInfo | None = None) -> None:
        self.horizon = horizon
        self.tz = tz or ZoneInfo("UTC")
        # 1 s buckets for the last hour (rates, the dashboard's rate window); a coarser series when a
        # rule's window is longer than that, so neither holds more than MAX_BUCKETS buckets
        self.recent = Series(1.0, min(horizon, FINE_SPAN))
        self.long = Series(max(1.0, horizon / MAX_BUCKETS), horizon) if horizon > FINE_SPAN else None
        self.day_spend = Series(SPEND_RESOLUTION, 2 * 86400.0)  # since the start of the previous day
        self.latency = Series(1.0, min(horizon, LATENCY_SPAN))  # answered requests' latencies per tier
        self.samples = Samples(per_group=MAX_GROUP, groups=MAX_GROUPS, total=MAX_SAMPLED)
        self.seen = RecentIds(RECENT_IDS)
        self.answers_seen = 0  # answers stored since the start (a report is due when it moves)
        self.ooms: deque[OomRec] = deque(maxlen=MAX_RECORDS)
        self.spikes: deque[tuple[float, float]] = deque(maxlen=MAX_RECORDS)  # (at, daily_usd) from the guard
        self.budget_marks: deque[tuple[float, float, str]] = deque(maxlen=MAX_RECORDS)  # (at, fraction, scope)
        self.diversity_lows: deque[tuple[float, str]] = deque(maxlen=MAX_RECORDS)  # (at, task): diversity.low
        self._totals: dict[tuple[float, float], Bucket] = {}  # (since, now) -> merged buckets, one instant

    def _buckets(self, at: float) -> list[Bucket]:
        return [self.recent.at(at)] if self.long is None else [self.recent.at(at), self.long.at(at)]

    def _spend(self, at: float, usd: float) -> None:
        for b in self._buckets(at):
            b.spend_usd += usd
        self.day_spend.at(at).spend_usd += usd

    # --- input -----------------------------------------------------------------------------------
    def add_outcome(self, outcome: Outcome, at: float) -> None:
        """Every outcome is a request except a fan-out's combined result (its children are the requests:
        a failed child carries no parent id, so counting children keeps successes and errors alike)."""
        self._totals.clear()
        if isinstance(outcome, GenerateResult):
            if is_fanout(outcome):
                return
            if outcome.tier in PAID_TIERS and outcome.cost_usd > 0:
                self._spend(at, outcome.cost_usd)
            for b in self._buckets(at):
                b.add_request(ok=True, cached=outcome.cached, tier=outcome.tier, cost_usd=outcome.cost_usd)
            if not outcome.cached:
                self.latency.at(at).add_request(ok=True, tier=outcome.tier, latency_ms=outcome.timings.total_ms)
        else:
            for b in self._buckets(at):
                b.add_request(ok=False)

    def claim(self, request_id: str) -> bool:
        """True the first time an answer id is seen (a fan-out's responses repeat its children; a
        re-delivery repeats a result): the last RECENT_IDS ids are remembered."""
        return self.seen.claim(request_id)

    def store(self, answers: Iterable[Answer], *, sample: bool = True) -> None:
        """Keep answers already claimed: counted in the aggregates, and sampled when they have a group
        (unless ``sample`` is False: over the embedding allowance)."""
        self._totals.clear()
        for a in answers:
            for b in self._buckets(a.at):
                b.add_answer(a)
            if sample:
                self.samples.add(a)
            self.answers_seen += 1

    def add_answers(self, answers: Iterable[Answer]) -> list[Answer]:
        """Claim and store in one step; returns the answers that were new."""
        new = [a for a in answers if self.claim(a.request_id)]
        self.store(new)
        return new

    def add_failure(self, f: AttemptFailed, at: float) -> None:
        self._totals.clear()
        if f.tier in PAID_TIERS and f.cost_usd > 0:
            self._spend(at, f.cost_usd)
        if f.error.code == "oom":
            self.ooms.append(OomRec(at, f.target, "", f.model, f.request_id, from_event=False))

    def add_event(self, ev: Event, at: float) -> None:
        match ev:
            case Oom():
                self.ooms.append(OomRec(at, ev.host, ev.card, ev.model, ev.request_id))
            case CostSpike():
                self.spikes.append((at, ev.daily_usd))
            case BudgetThreshold():
                self.budget_marks.append((at, ev.fraction, ev.scope))
            case DiversityLow():
                self.diversity_lows.append((at, ev.task or "-"))

    def prune(self, now: float) -> None:
        self._totals.clear()
        cutoff = now - self.horizon
        day_start = self.day_start(now) - 86400
        self.recent.prune(now - self.recent.span)
        self.latency.prune(now - self.latency.span)
        if self.long is not None:
            self.long.prune(cutoff)
        self.day_spend.prune(min(cutoff, day_start))
        self.samples.prune(cutoff)
        while self.ooms and self.ooms[0].at < cutoff:
            self.ooms.popleft()
        while self.spikes and self.spikes[0][0] < min(cutoff, day_start):
            self.spikes.popleft()
        while self.budget_marks and self.budget_marks[0][0] < min(cutoff, now - BUDGET_MARKS_S):
            self.budget_marks.popleft()
        while self.diversity_lows and self.diversity_lows[0][0] < cutoff:
            self.diversity_lows.popleft()

    # --- windows ---------------------------------------------------------------------------------
    def total(self, since: float, now: float) -> Bucket:
        """Every counter over (since, now], exact up to one bucket at each edge."""
        key = (since, now)
        got = self._totals.get(key)
        if got is None:
            series = self.recent if self.long is None or now - since <= self.recent.span else self.long
            if len(self._totals) > 16:
                self._totals.clear()
            got = self._totals[key] = series.total(since, now)
        return got

    def latencies(self, since: float, now: float) -> Bucket:
        """Latency histograms per tier over (since, now] (the last LATENCY_SPAN seconds at most)."""
        return self.latency.total(since, now)

    def window_answers(self, since: float, now: float) -> list[Answer]:
        """The sampled answers (those with a task or fan-out) inside the window, oldest first."""
        return self.samples.window(since, now)

    def summary(
        self, since: float, now: float, *, task: str | None = None, answers: list[Answer] | None = None
    ) -> Summary:
        """The diversity figures of the window: per task from the sampled answers (``answers``: those,
        given vectors by the caller), overall counts (answers, families, models, temperatures) from every
        answer of the window."""
        sample = self.window_answers(since, now) if answers is None else answers
        s = summarise(sample, task=task)
        if task is None:
            s.overall.update(overall_counts(self.total(since, now)))
        return s

    # --- figures ---------------------------------------------------------------------------------
    def day_start(self, now: float) -> float:
        local = datetime.fromtimestamp(now, self.tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def next_day_start(self, now: float) -> float:
        local = datetime.fromtimestamp(now, self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        return (local + timedelta(days=1)).timestamp()

    def daily_spend(self, now: float) -> float:
        start = self.day_start(now)
        own = sum(b.spend_usd for b in self.day_spend.window(start, now) if b.start >= start)
        reported = max((usd for at, usd in self.spikes if start <= at <= now), default=0.0)
        return max(own, reported)

    def oom_records(self, since: float, now: float) -> list[OomRec]:
        events = [o for o in self.ooms if o.from_event and since <= o.at <= now]
        reported = {o.request_id for o in events if o.request_id}
        failed = [o for o in self.ooms if not o.from_event and since <= o.at <= now and o.request_id not in reported]
        return sorted(events + failed, key=lambda o: o.at)

    def measure(self, metric: str, window: float | None, now: float, live: LiveState) -> Measure:
        """The value of one alert metric (``schemas.config.ops.METRICS``) at ``now``."""
        span = float(window) if window else self.horizon
        since = now - span
        if metric == "loaded_models":
            return Measure(float(sum(len(h.models) for h in live.hosts_up(now))))
        if metric == "hosts_up":
            return Measure(float(len(live.hosts_up(now))))
        if metric == "queue_depth":
            return Measure(float(max((q.depth for q in live.current_queues(now)), default=0)))
        if metric == "queue_wait_s":
            return Measure(float(max((q.oldest_wait_s for q in live.current_queues(now)), default=0.0)))
        if metric == "oom_errors":
            return Measure(float(len(self.oom_records(since, now))))
        if metric == "daily_api_spend":
            return Measure(self.daily_spend(now))
        if metric == "budget_used_fraction":  # the highest threshold crossed, and the budgets that crossed it
            marks = [(f, scope) for at, f, scope in self.budget_marks if since <= at <= now]
            top = max((f for f, _ in marks), default=0.0)
            return Measure(top, detail=", ".join(dict.fromkeys(s for f, s in marks if f == top)) or None)
        if metric == "low_diversity_tasks":  # tasks whose unique approaches fell under the minimum (§9.2.4)
            tasks = list(dict.fromkeys(task for at, task in self.diversity_lows if since <= at <= now))
            return Measure(float(len(tasks)), detail=", ".join(tasks[:10]) or None)
        total = self.total(since, now)
        if metric == "spend_velocity":
            return Measure(total.spend_usd / (span / 3600.0))
        if metric == "request_rate":
            return Measure(total.requests / span, total.requests)
        if metric == "cache_hit_rate":
            return Measure(total.cached / total.requests if total.requests else None, total.requests)
        if metric == "error_rate":
            return Measure(total.errors / total.requests if total.requests else None, total.requests)
        if metric == "model_families":
            return Measure(float(len(total.families)) if total.answers else None, total.answers)
        if metric == "top_model_share":
            if not total.answers:
                return Measure(None, 0)
            return Measure(max(total.models.values()) / total.answers, total.answers)
        if metric == "diversity_score":
            score = self.summary(since, now).overall.get("diversity_score")
            return Measure(score, total.answers if score is not None else 0)
        raise ValueError(f"unknown metric {metric!r}")


def overall_counts(total: Bucket) -> dict[str, float]:
    """The window's counting figures over every answer in it (as ``diversity.metrics`` computes them
    for a list of answers)."""
    if not total.answers:
        return {}
    out = {
        "answers": float(total.answers),
        "model_families": float(len(total.families)),
        "models": float(len(total.models)),
        "top_model_share": max(total.models.values()) / total.answers,
        "family_evenness": evenness(list(total.families.values())),
        "prompt_variants": float(len(total.variants)),
        "code_answers": float(total.code_answers),
    }
    variance = total.temperature_variance
    if variance is not None:
        out["temperature_variance"] = variance
    return {k: round(v, 6) for k, v in out.items()}
