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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from actors.diversity_monitor.diversity import MAX_TEXT, Answer, code_of, structure, summarise
from schemas.events import BudgetThreshold, CostSpike, DiversityLow, Event, Oom
from schemas.result import AttemptFailed, GenerateResult, Outcome, Provenance
from schemas.state import HostState, QueueState, TierState

PAID_TIERS = ("together", "premium")
QUEUE_STALE_S = 30.0  # a queue record older than this is not current (the router writes every 2 s)
BUDGET_MARKS_S = 7 * 86400.0  # thresholds crossed are kept this long (rare; a rule's window may be days)
HOST_STALE_S = 15.0  # a host whose heartbeat is older than this (and > 3 heartbeats) is not up


@dataclass(frozen=True)
class Measure:
    value: float | None  # None: unknown (no data)
    samples: int | None = None  # requests / answers behind a rate; None: a gauge (always enough)
    detail: str | None = None  # what the figure is about, for the alert's context (e.g. which budgets)


@dataclass(frozen=True)
class RequestRec:
    at: float
    request_id: str
    ok: bool
    cached: bool = False
    tier: str = ""
    model: str = ""
    target: str = ""
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error_code: str = ""


@dataclass(frozen=True)
class SpendRec:
    at: float
    usd: float
    tier: str


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
    def __init__(self, horizon: float, tz: ZoneInfo | None = None) -> None:
        self.horizon = horizon
        self.tz = tz or ZoneInfo("UTC")
        self.answers: deque[Answer] = deque()
        self.requests: deque[RequestRec] = deque()
        self.failures: deque[RequestRec] = deque()
        self.spend: deque[SpendRec] = deque()  # kept since the start of the previous day (daily spend)
        self.ooms: deque[OomRec] = deque()
        self.spikes: deque[tuple[float, float]] = deque()  # (at, daily_usd) from the budget_guard
        self.budget_marks: deque[tuple[float, float, str]] = deque()  # (at, fraction, scope): thresholds crossed
        self.diversity_lows: deque[tuple[float, str]] = deque()  # (at, task): diversity.low events
        self._answer_ids: set[str] = set()

    # --- input -----------------------------------------------------------------------------------
    def add_outcome(self, outcome: Outcome, at: float) -> None:
        """Every outcome is a request except a fan-out's combined result (its children are the requests:
        a failed child carries no parent id, so counting children keeps successes and errors alike)."""
        if isinstance(outcome, GenerateResult):
            if is_fanout(outcome):
                return
            if outcome.tier in PAID_TIERS and outcome.cost_usd > 0:
                self.spend.append(SpendRec(at, outcome.cost_usd, outcome.tier))
            self.requests.append(
                RequestRec(
                    at,
                    outcome.request_id,
                    True,
                    outcome.cached,
                    outcome.tier,
                    outcome.model,
                    outcome.target,
                    outcome.cost_usd,
                    outcome.timings.total_ms,
                )
            )
        else:
            self.requests.append(RequestRec(at, outcome.request_id, False, error_code=outcome.error.code))

    def claim(self, request_id: str) -> bool:
        """True the first time an answer id is seen (a fan-out's responses repeat its children)."""
        if request_id in self._answer_ids:
            return False
        self._answer_ids.add(request_id)
        return True

    def store(self, answers: Iterable[Answer]) -> None:
        """Keep answers already claimed."""
        self.answers.extend(answers)

    def add_answers(self, answers: Iterable[Answer]) -> list[Answer]:
        """Claim and store in one step; returns the answers that were new."""
        new = [a for a in answers if self.claim(a.request_id)]
        self.store(new)
        return new

    def add_failure(self, f: AttemptFailed, at: float) -> None:
        self.failures.append(
            RequestRec(
                at,
                f.request_id,
                False,
                tier=f.tier,
                model=f.model,
                target=f.target,
                cost_usd=f.cost_usd,
                error_code=f.error.code,
            )
        )
        if f.tier in PAID_TIERS and f.cost_usd > 0:
            self.spend.append(SpendRec(at, f.cost_usd, f.tier))
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
        cutoff = now - self.horizon
        day_start = self.day_start(now) - 86400
        for queue in (self.requests, self.failures, self.ooms):
            while queue and queue[0].at < cutoff:
                queue.popleft()
        while self.answers and self.answers[0].at < cutoff:
            self._answer_ids.discard(self.answers.popleft().request_id)
        while self.spend and self.spend[0].at < min(cutoff, day_start):
            self.spend.popleft()
        while self.spikes and self.spikes[0][0] < min(cutoff, day_start):
            self.spikes.popleft()
        while self.budget_marks and self.budget_marks[0][0] < min(cutoff, now - BUDGET_MARKS_S):
            self.budget_marks.popleft()
        while self.diversity_lows and self.diversity_lows[0][0] < cutoff:
            self.diversity_lows.popleft()

    # --- figures ---------------------------------------------------------------------------------
    def day_start(self, now: float) -> float:
        local = datetime.fromtimestamp(now, self.tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def next_day_start(self, now: float) -> float:
        local = datetime.fromtimestamp(now, self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        return (local + timedelta(days=1)).timestamp()

    def daily_spend(self, now: float) -> float:
        start = self.day_start(now)
        own = sum(s.usd for s in self.spend if start <= s.at <= now)
        reported = max((usd for at, usd in self.spikes if start <= at <= now), default=0.0)
        return max(own, reported)

    def oom_records(self, since: float, now: float) -> list[OomRec]:
        events = [o for o in self.ooms if o.from_event and since <= o.at <= now]
        reported = {o.request_id for o in events if o.request_id}
        failed = [o for o in self.ooms if not o.from_event and since <= o.at <= now and o.request_id not in reported]
        return sorted(events + failed, key=lambda o: o.at)

    def window(self, items: Iterable[RequestRec], since: float, now: float) -> list[RequestRec]:
        return [r for r in items if since <= r.at <= now]

    def window_answers(self, since: float, now: float) -> list[Answer]:
        return [a for a in self.answers if since <= a.at <= now]

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
        if metric == "spend_velocity":
            return Measure(sum(s.usd for s in self.spend if since <= s.at <= now) / (span / 3600.0))
        requests = self.window(self.requests, since, now)
        if metric == "request_rate":
            return Measure(len(requests) / span, len(requests))
        if metric == "cache_hit_rate":
            hits = sum(1 for r in requests if r.cached)
            return Measure(hits / len(requests) if requests else None, len(requests))
        if metric == "error_rate":
            errors = sum(1 for r in requests if not r.ok)
            return Measure(errors / len(requests) if requests else None, len(requests))
        answers = self.window_answers(since, now)
        if metric == "model_families":
            return Measure(float(len({a.family for a in answers})) if answers else None, len(answers))
        if metric == "top_model_share":
            if not answers:
                return Measure(None, 0)
            counts: dict[str, int] = {}
            for a in answers:
                counts[a.model] = counts.get(a.model, 0) + 1
            return Measure(max(counts.values()) / len(answers), len(answers))
        if metric == "diversity_score":
            summary = summarise(answers)
            score = summary.overall.get("diversity_score")
            return Measure(score, len(answers) if score is not None else 0)
        raise ValueError(f"unknown metric {metric!r}")
