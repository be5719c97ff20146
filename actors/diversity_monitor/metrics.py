"""Prometheus metrics (prometheus-client) on one HTTP endpoint: the paper's §10.1 dashboard and more.

Instruments updated as results and events arrive (counters and histograms), and gauges read at scrape
time from the monitor's current figures (no stale label sets: a queue or card that is gone disappears):

    orchestra_request_latency_seconds{route,tier,model}     histogram (p99: histogram_quantile)
    orchestra_requests_total{tier,model,outcome}            outcome = answered / cached / error
    orchestra_request_errors_total{code}, orchestra_attempt_failures_total{tier,model,code}
    orchestra_cost_usd_total{tier,model}, orchestra_cost_per_request_usd{tier} (histogram)
    orchestra_tokens_total{tier,model,direction}, orchestra_events_total{kind}
    orchestra_remediations_total{rule,action}, orchestra_notifications_total{channel,result}
    orchestra_model_available{model,tier}, orchestra_models_loaded, orchestra_hosts_up
    orchestra_card_memory_used_bytes{host,card}, orchestra_card_memory_total_bytes{host,card}
    orchestra_queue_depth{target}, orchestra_queue_oldest_wait_seconds{target}, orchestra_tier_enabled{tier}
    orchestra_cache_hit_ratio, orchestra_error_ratio, orchestra_request_rate_per_second (over monitor.window)
    orchestra_spend_today_usd, orchestra_spend_velocity_usd_per_hour
    orchestra_diversity_score, orchestra_diversity_<figure> (window), orchestra_task_diversity_score{task}
    orchestra_diversity_family_answers{family} (window: the model-family mix)
    orchestra_alerts_firing{rule,severity}
    orchestra_evaluator_score{model} (histogram 1..5), orchestra_evaluations_total{result} (phase 3 grading)

Label values come only from finite sets: tiers and error codes are closed literals of the schema, and a
result's model and target are kept only when the config names them (:class:`LabelSets`), else they
count as ``other`` — a forged result on the bus cannot grow the number of series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.diversity_monitor.web import is_loopback, loopback_host
from schemas.result import AttemptFailed, GenerateResult, Outcome

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
SCORE_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0)
COST_BUCKETS = (0.0, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0)
MAX_TASKS = 20  # tasks exported with their own diversity score (the most recent)
OTHER = "other"


@dataclass(frozen=True)
class LabelSets:
    """The values a model or target label may take (from the config); anything else is ``other``.
    Empty sets (a bare Metrics in a test) keep every value."""

    models: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    families: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, models: Iterable[str], hosts: Iterable[str], providers: Iterable[str], families: Iterable[str] = ()
    ) -> LabelSets:
        return cls(frozenset(models), frozenset([*hosts, *providers, "cache", "fanout"]), frozenset(families))

    def family(self, value: str) -> str:
        return value if not self.families or value in self.families else OTHER

    def model(self, value: str) -> str:
        return value if not self.models or value in self.models else OTHER

    def target(self, value: str) -> str:
        return value if not self.targets or value in self.targets else OTHER


@dataclass
class Figures:
    """What the scrape-time gauges show: plain data the monitor assembles."""

    models: dict[tuple[str, str], bool] = field(default_factory=dict)  # (model, tier) -> available
    models_loaded: int = 0
    hosts_up: int = 0
    cards: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (host, card) -> used, total
    queues: dict[str, tuple[int, float]] = field(default_factory=dict)  # target -> depth, oldest wait
    tiers: dict[str, bool] = field(default_factory=dict)
    window: dict[str, float] = field(default_factory=dict)  # cache_hit_ratio, error_ratio, request_rate...
    spend_today: float = 0.0
    spend_velocity: float = 0.0
    diversity: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, float] = field(default_factory=dict)
    families: dict[str, int] = field(default_factory=dict)  # answers per model family over the window
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (rule, severity) of open alerts


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class FiguresCollector(Collector):
    def __init__(self, figures: Callable[[], Figures], labels: LabelSets | None = None) -> None:
        self.figures = figures
        self.labels = labels or LabelSets()

    def collect(self) -> Iterator[Metric]:
        f = self.figures()
        yield from self._capacity(f)
        yield from self._traffic(f)

    def _capacity(self, f: Figures) -> Iterator[Metric]:
        """What can answer: models, hosts, cards, queues, tiers."""
        g = _gauge(
            "orchestra_model_available",
            "1 when the model can answer now (loaded, or its cloud tier and provider are up)",
            ["model", "tier"],
        )
        for (model, tier), ok in sorted(f.models.items()):
            g.add_metric([model, tier], 1.0 if ok else 0.0)
        yield g
        yield GaugeMetricFamily(
            "orchestra_models_loaded", "Model instances loaded on hosts that are up", value=f.models_loaded
        )
        yield GaugeMetricFamily("orchestra_hosts_up", "gpu_hosts with a fresh heartbeat", value=f.hosts_up)
        used = _gauge("orchestra_card_memory_used_bytes", "Memory in use on a card", ["host", "card"])
        total = _gauge("orchestra_card_memory_total_bytes", "Memory of a card", ["host", "card"])
        for (host, card), (u, t) in sorted(f.cards.items()):
            used.add_metric([host, card], float(u))
            total.add_metric([host, card], float(t))
        yield used
        yield total
        depth = _gauge("orchestra_queue_depth", "Pending requests per target", ["target"])
        wait = _gauge("orchestra_queue_oldest_wait_seconds", "Age of the oldest pending request", ["target"])
        for target, (d, w) in sorted(f.queues.items()):
            depth.add_metric([target], float(d))
            wait.add_metric([target], w)
        yield depth
        yield wait
        tiers = _gauge("orchestra_tier_enabled", "1 when the tier takes requests", ["tier"])
        for tier, enabled in sorted(f.tiers.items()):
            tiers.add_metric([tier], 1.0 if enabled else 0.0)
        yield tiers

    def _traffic(self, f: Figures) -> Iterator[Metric]:
        """What happened over the window: rates, spend, diversity, open alerts."""
        docs = {
            "cache_hit_ratio": "Share of requests answered from the cache over the monitor window",
            "error_ratio": "Share of requests that ended in an error over the monitor window",
            "request_rate_per_second": "Requests per second over the monitor window",
        }
        for key, doc in docs.items():
            if key in f.window:
                yield GaugeMetricFamily(f"orchestra_{key}", doc, value=f.window[key])
        yield GaugeMetricFamily("orchestra_spend_today_usd", "Cloud spend since local midnight", value=f.spend_today)
        yield GaugeMetricFamily(
            "orchestra_spend_velocity_usd_per_hour",
            "Cloud spend per hour over the monitor window",
            value=f.spend_velocity,
        )
        for key, value in sorted(f.diversity.items()):
            name = "orchestra_diversity_score" if key == "diversity_score" else f"orchestra_diversity_{key}"
            yield GaugeMetricFamily(name, f"Diversity over the monitor window: {key.replace('_', ' ')}", value=value)
        mix = _gauge("orchestra_diversity_family_answers", "Answers per model family (monitor window)", ["family"])
        mixed: dict[str, int] = {}  # families the config does not name (forged results) count as "other"
        for family, count in f.families.items():
            mixed[self.labels.family(family)] = mixed.get(self.labels.family(family), 0) + count
        for family, count in sorted(mixed.items()):
            mix.add_metric([family], float(count))
        yield mix
        tasks = _gauge("orchestra_task_diversity_score", "Diversity score of a task's answers (recent tasks)", ["task"])
        for task, score in sorted(f.tasks.items()):
            tasks.add_metric([task], score)
        yield tasks
        firing = _gauge("orchestra_alerts_firing", "1 for each open alert", ["rule", "severity"])
        for rule, severity in sorted(set(f.alerts)):
            firing.add_metric([rule, severity], 1.0)
        yield firing


class Metrics:
    def __init__(self, figures: Callable[[], Figures], labels: LabelSets | None = None) -> None:
        self.labels = labels or LabelSets()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # (metric, label values) -> its child
        r = self.registry = CollectorRegistry()
        self.latency = Histogram(
            "orchestra_request_latency_seconds",
            "Time from request to result",
            ["route", "tier", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter("orchestra_requests", "Requests finished", ["tier", "model", "outcome"], registry=r)
        self.errors = Counter("orchestra_request_errors", "Requests that ended in an error", ["code"], registry=r)
        self.failures = Counter(
            "orchestra_attempt_failures",
            "Failed attempts (the router may fall back)",
            ["tier", "model", "code"],
            registry=r,
        )
        self.cost = Counter("orchestra_cost_usd", "Money spent", ["tier", "model"], registry=r)
        self.cost_per_request = Histogram(
            "orchestra_cost_per_request_usd", "Cost of one request", ["tier"], buckets=COST_BUCKETS, registry=r
        )
        self.tokens = Counter("orchestra_tokens", "Tokens processed", ["tier", "model", "direction"], registry=r)
        self.events = Counter("orchestra_events", "Events seen on the bus", ["kind"], registry=r)
        self.unsampled = Counter(
            "orchestra_answers_unsampled",
            "Answers of a task or fan-out past monitor.embed_per_s: counted, not in the pairwise diversity figures",
            registry=r,
        )
        self.remediations = Counter(
            "orchestra_remediations", "Auto-remediation actions", ["rule", "action"], registry=r
        )
        self.notifications = Counter("orchestra_notifications", "Notifications sent", ["channel", "result"], registry=r)
        self.evaluator_score = Histogram(
            "orchestra_evaluator_score",
            "Phase 3's automatic grading: the evaluator's score (1..5) of a generator's answer",
            ["model"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.evaluations = Counter(
            "orchestra_evaluations",
            "Automatic gradings by result: scored / unreadable / error / dropped / no_request / unknown",
            ["result"],
            registry=r,
        )
        r.register(FiguresCollector(figures, self.labels))

    def _of(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set (prometheus_client validates and
        locks on every ``labels`` call: ~10 % of the monitor's CPU at six calls a result)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, outcome: Outcome) -> None:
        of = self._of
        if not isinstance(outcome, GenerateResult):
            of(self.requests, "", "", "error").inc()
            of(self.errors, outcome.error.code).inc()
            return
        model = self.labels.model(outcome.model)
        if outcome.responses:  # a fan-out's combined result: its children were counted one by one
            of(self.latency, "fanout", outcome.tier, model).observe(outcome.timings.total_ms / 1000)
            return
        tier = outcome.tier
        of(self.requests, tier, model, "cached" if outcome.cached else "answered").inc()
        target = self.labels.target(outcome.target)
        of(self.latency, target, tier, model).observe(max(0.0, outcome.timings.total_ms) / 1000)
        of(self.cost, tier, model).inc(max(0.0, outcome.cost_usd))
        of(self.cost_per_request, tier).observe(max(0.0, outcome.cost_usd))
        of(self.tokens, tier, model, "input").inc(max(0, outcome.usage.input_tokens))
        of(self.tokens, tier, model, "output").inc(max(0, outcome.usage.output_tokens))

    def observe_failure(self, f: AttemptFailed) -> None:
        model = self.labels.model(f.model)
        self._of(self.failures, f.tier, model, f.error.code).inc()
        if f.cost_usd > 0:
            self._of(self.cost, f.tier, model).inc(f.cost_usd)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` on aiohttp, in the actor's event loop (figures are read without locks)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self.runner: web.AppRunner | None = None
        self.extra: Callable[[web.Application], None] | None = None  # more routes (the dashboard)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        app.router.add_get("/", self.index)
        if self.extra is not None:
            self.extra(app)
        # an idle connection goes after 75 s (aiohttp's default is an hour); a stop waits 5 s for what is answering
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0, shutdown_timeout=5.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self.port

    async def handle(self, request: web.Request) -> web.Response:
        if is_loopback(self.host) and not loopback_host(request):  # a rebound DNS name: another site reading it
            raise web.HTTPForbidden(text="/metrics on loopback answers loopback names only\n")
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="LLM Orchestra diversity_monitor: see /metrics and /dashboard\n")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
