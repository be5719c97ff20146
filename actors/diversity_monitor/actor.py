"""The diversity_monitor: diversity metrics over the results, alert rules with auto-remediation,
escalation and digests, phase 3's automatic grading (grading.py), and Prometheus metrics on one HTTP endpoint.

It reads results (``orch.result.>``), every event (``orch.event.>``) and the alert / overflow commands
with durable consumers, and the live state (hosts, queues, tiers, providers) with KV watches. At start
it replays the stored history it needs (the metric windows, today's spend, every alert event), so a
restart loses no window and no alert; deliveries the replay already covered are acknowledged unread.
Every ``alerts.evaluate_every`` the rules are evaluated; every ``monitor.report_every`` the diversity
figures are published as ``diversity.report`` events (and ``diversity.low`` when they drop).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any
from zoneinfo import ZoneInfo

from actors.diversity_monitor import feed, remediation
from actors.diversity_monitor.board import Board, snapshot
from actors.diversity_monitor.desk import Desk
from actors.diversity_monitor.diversity import Summary
from actors.diversity_monitor.embedding import Embedder, load_embedder
from actors.diversity_monitor.errors import EmbedderUnavailable
from actors.diversity_monitor.figures import digest_figures, figures
from actors.diversity_monitor.grading import Grader
from actors.diversity_monitor.metrics import Figures, LabelSets, Metrics, MetricsServer
from actors.diversity_monitor.reviews import EVENT_SUBJECTS as REVIEW_EVENTS
from actors.diversity_monitor.reviews import Reviews
from actors.diversity_monitor.rules import Alert, Engine, Raised
from actors.diversity_monitor.web import Dashboard, audit_records
from actors.diversity_monitor.window import LiveState, Observations
from bus import subjects
from bus.actor import Actor
from bus.consumer import OFF_PATH_LINGER, ConsumerSpec, Delivery
from bus.kv import LiveView
from schemas.budget import LEDGER_SUMMARY, LedgerSummary, SummaryRequest
from schemas.codec import EVENT, Codec
from schemas.commands import AckAlert, DecideReview, SetOverflow
from schemas.config.root import OrchestraConfig
from schemas.events import DiversityLow, DiversityReport
from schemas.state import HostState, PhaseState, ProviderState, QueueState, TierState

COMMAND_SUBJECTS = (f"{subjects.PREFIX}.cmd.alert.ack", f"{subjects.PREFIX}.cmd.router.>")
MAX_TASK_REPORTS = 20
BUDGETS_UNWATCHED_S = 30.0  # with no page open, the budget_guard's summary is asked this often only


class DiversityMonitor(Actor):
    """Diversity metrics, alert rules, auto-remediation, escalation, digests and /metrics."""

    name = "diversity_monitor"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None, embedder: Embedder | None = None) -> None:
        super().__init__(cfg, instance=instance)
        windows = [float(c.window) for r in cfg.alerts.rules.values() for c in r.when if c.window]
        self.horizon = max([float(cfg.monitor.window), *windows])
        self.obs = Observations(self.horizon, ZoneInfo(cfg.budgets.timezone))
        self.engine = Engine(cfg.alerts.rules)
        self.desk = Desk(self)  # checks the digest times: a ValueError stops the start
        families = {m.family for m in cfg.models.values()} | ({"embedding"} if cfg.embedding_models else set())
        models = [*cfg.models, *cfg.embedding_models]  # cloud embeddings are charged through a result too
        self.metrics = Metrics(self.current_figures, LabelSets.of(models, cfg.hosts, cfg.providers, families))
        self.server = MetricsServer(self.metrics, cfg.monitor.metrics_host, cfg.monitor.metrics_port)
        board = cfg.monitor.dashboard
        self.board = Board(int(float(board.history) / max(0.05, float(board.refresh))), board.tail)
        self.budgets: LedgerSummary | None = None  # the budget_guard's ledger, asked each refresh
        self.dashboard: Dashboard | None = None  # made at start (its token file is I/O)
        self.embedder: Embedder | None = embedder  # None: load the cache's MiniLM at start
        self.own_embedder = embedder is None
        self.embedding = asyncio.Lock()
        self.summary: Summary | None = None
        self.replayed: dict[str, int] = {}  # stream -> last sequence the start-up replay read
        self.overflowing: set[str] = set()  # local models ('*' = all) overflowed to the cloud
        self.low: set[str | None] = set()  # groups whose diversity is reported low
        self.evaluations = 0
        self.heartbeat_s = max([float(h.heartbeat) for h in cfg.hosts.values()] or [2.0])
        self.reviews: Reviews | None = None  # the review queue and measured quality (opened at start)
        self.grader = Grader(self)  # phase 3: a sampled share of answers graded by the phase's evaluator

    def consumers(self) -> list[ConsumerSpec]:
        defaults = {**self.consumer_defaults(), "concurrency": 4}
        return [
            ConsumerSpec(
                stream="RESULTS",
                durable=self.name,
                subjects=(subjects.RESULT_ALL,),
                handler=self.on_result,
                description="results and failed attempts",
                **{**defaults, "concurrency": 32, "linger": OFF_PATH_LINGER},  # in batches, after the answer
            ),
            ConsumerSpec(
                stream="EVENTS",
                durable=self.name,
                subjects=(subjects.EVENT_ALL,),
                handler=self.on_event,
                description="every event",
                **defaults,
            ),
            ConsumerSpec(
                stream="COMMANDS",
                durable=self.name,
                subjects=COMMAND_SUBJECTS,  # in order: switches
                handler=self.on_command,
                description="alert acks and overflow switches",
                **{**defaults, "concurrency": 1},
            ),
            ConsumerSpec(
                stream="EVENTS",
                durable=f"{self.name}-quality",
                subjects=REVIEW_EVENTS,
                handler=self.on_check,
                description="escalations (the review queue) and premium validations (measured quality)",
                **{**defaults, "concurrency": 1},
            ),
            ConsumerSpec(
                stream="COMMANDS",
                durable=f"{self.name}-reviews",
                subjects=(subjects.REVIEW_COMMANDS,),
                handler=self.on_review,
                description="the operator's review decisions",
                **{**defaults, "concurrency": 1},
            ),
        ]

    async def on_start(self) -> None:
        self.hosts: LiveView[HostState] = LiveView(self.js, subjects.KV_HOSTS, Codec(HostState))
        self.queues: LiveView[QueueState] = LiveView(self.js, subjects.KV_QUEUES, Codec(QueueState))
        self.tiers: LiveView[TierState] = LiveView(self.js, subjects.KV_TIERS, Codec(TierState))
        self.providers: LiveView[ProviderState] = LiveView(self.js, subjects.KV_PROVIDERS, Codec(ProviderState))
        self.phase: LiveView[PhaseState] = LiveView(self.js, subjects.KV_PHASE, Codec(PhaseState))
        views: list[LiveView[Any]] = [self.hosts, self.queues, self.tiers, self.providers, self.phase]
        for view in views:
            self.spawn(f"view:{view.bucket}", view.run)
        await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in views)), 10.0)
        if self.embedder is None:
            try:
                self.embedder = await asyncio.to_thread(load_embedder, self.cfg)
                self.log.info("embeddings: the cache's MiniLM")
            except EmbedderUnavailable as exc:
                self.log.warning("no sentence embedder (%s): prose grouped lexically, no embedding diversity", exc)
        self.reviews = Reviews(self.js, self.emit, self.cfg.router.validation.window)
        await self.reviews.open()
        self.spawn("view:reviews", self.reviews.queue.run)
        await feed.warm_up(self)
        if self.cfg.monitor.dashboard.enabled:
            self.dashboard = Dashboard.of(
                self.cfg,
                state=self.page_state,
                history=lambda: {"points": list(self.board.points), "tail": list(self.board.tail)},
                ack=self.ack_from_page,
                audit=functools.partial(audit_records, self.js),
            )
            self.server.extra = self.dashboard.routes
        port = await self.server.start()
        self.log.info("metrics on http://%s:%d/metrics", self.cfg.monitor.metrics_host, port)
        if self.dashboard is not None:
            self.dashboard.announce(self.cfg.monitor.metrics_host, port)
            self.spawn("dashboard", self.dashboard_loop)
        await self.desk.start()
        self.spawn("evaluate", self.evaluate_loop)
        self.spawn("report", self.report_loop)

    async def on_stop(self) -> None:
        await self.desk.stop()
        if self.dashboard is not None:
            self.dashboard.close()
        await self.server.stop()
        close = getattr(self.embedder, "close", None)
        if self.own_embedder and close is not None:
            close()

    # --- input -----------------------------------------------------------------------------------
    async def on_result(self, d: Delivery) -> None:
        if d.stream_seq > self.replayed.get("RESULTS", 0):
            await feed.result(self, d.subject, d.data, d.published_at, live=True)

    async def on_event(self, d: Delivery) -> None:
        if d.stream_seq > self.replayed.get("EVENTS", 0):
            feed.event(self, d.data, d.published_at, live=True)

    async def on_command(self, d: Delivery) -> None:
        cmd = feed.command(d.data)
        match cmd:
            case AckAlert():
                alert = self.engine.by_id.get(cmd.alert_id)
                if alert is None:
                    self.log.warning("ack for unknown alert %s (by %s)", cmd.alert_id, cmd.by or "?")
                elif alert.acked_at is None:
                    self.engine.ack(cmd.alert_id, cmd.by, cmd.at or time.time())
                    await self.desk.acknowledged(alert)
            case SetOverflow():
                self.apply_overflow(cmd)

    async def on_check(self, d: Delivery) -> None:
        """An escalation or a premium validation (SchemaError: dead-lettered by the consumer)."""
        if self.reviews is not None:
            await self.reviews.on_event(EVENT.decode(d.data), d.stream_seq)

    async def on_review(self, d: Delivery) -> None:
        cmd = feed.command(d.data)
        if isinstance(cmd, DecideReview) and self.reviews is not None:
            await self.reviews.decide(cmd)

    def apply_overflow(self, cmd: SetOverflow) -> None:
        key = cmd.model or "*"
        if cmd.enabled:
            self.overflowing.add(key)
        else:
            self.overflowing.discard(key)

    # --- the clock -------------------------------------------------------------------------------
    def live(self) -> LiveState:
        return LiveState(
            hosts=self.hosts.data, queues=self.queues.data, tiers=self.tiers.data, heartbeat_s=self.heartbeat_s
        )

    async def evaluate(self, now: float) -> None:
        self.obs.prune(now)
        live = self.live()
        changes = self.engine.evaluate(lambda metric, window: self.obs.measure(metric, window, now, live), now)
        for change in changes:
            if isinstance(change, Raised):
                await self.desk.raised(change.alert, now)
            else:
                await self.desk.resolved(change.alert)
        await self.desk.tick(now)
        self.evaluations += 1

    async def evaluate_loop(self) -> None:
        period = max(0.05, float(self.cfg.alerts.evaluate_every))
        while True:
            await self.evaluate(time.time())
            await asyncio.sleep(period)

    async def report_loop(self) -> None:
        period = max(0.05, float(self.cfg.monitor.report_every))
        last: int | None = None
        while True:
            await asyncio.sleep(period)
            now = time.time()
            since = now - float(self.cfg.monitor.window)
            self.summary = self.obs.summary(since, now)
            seen = self.obs.answers_seen
            if self.obs.total(since, now).answers and seen != last:
                await self.report(self.summary)
            last = seen

    async def report(self, summary: Summary) -> None:
        window = float(self.cfg.monitor.window)
        await self.emit(DiversityReport(window_s=window, metrics=summary.overall))
        threshold = self.cfg.monitor.min_unique_approaches
        for task, m in list(summary.tasks.items())[:MAX_TASK_REPORTS]:
            await self.emit(DiversityReport(window_s=window, task=task, metrics=m.as_dict()))
            low = threshold > 0 and m.answers >= threshold and m.unique_approaches < threshold
            if low and task not in self.low:
                await self.emit(
                    DiversityLow(
                        metric="unique_approaches",
                        value=float(m.unique_approaches),
                        threshold=float(threshold),
                        task=task,
                    )
                )
                self.log.warning(
                    "diversity low on task %s: %d unique approaches in %d answers", task, m.unique_approaches, m.answers
                )
            if low:
                self.low.add(task)
            else:
                self.low.discard(task)

    # --- for the desk and the metrics endpoint ---------------------------------------------------
    def plan(self, action: str, alert: Alert, now: float, why: str = "") -> remediation.Plan:
        live = self.live()
        if action == "oom":
            windows = (
                [
                    float(c.window)
                    for c in self.cfg.alerts.rules[alert.rule].when
                    if c.metric == "oom_errors" and c.window
                ]
                if alert.rule in self.cfg.alerts.rules
                else []
            )
            ooms = self.obs.oom_records(now - (windows[0] if windows else self.horizon), now)
            return remediation.plan_oom(ooms, live.hosts, self.cfg)
        if action == "backlog":
            queues = live.current_queues(now)
            backlogged = [q for q in queues if q.backlog] or sorted(queues, key=lambda q: -q.depth)[:1]
            return remediation.plan_backlog(
                backlogged, {h.host: h for h in live.hosts_up(now)}, live.tiers, self.cfg, now, self.overflowing
            )
        if action == "cost_spike":
            until = self.obs.next_day_start(now) if self.cfg.budgets.spike.reenable == "next_day" else None
            return remediation.plan_cost_spike(live.tiers, self.cfg, self.obs.daily_spend(now), until, why)
        return remediation.Plan("none", detail=f"no remediation for action {action!r}")

    def current_figures(self) -> Figures:
        now = time.time()
        return figures(
            self.cfg, self.obs, self.live(), self.providers.data, self.summary, self.engine.open_alerts(), now
        )

    def digest_figures(self, now: float) -> dict[str, float]:
        return digest_figures(self.current_figures())

    # --- the dashboard ---------------------------------------------------------------------------
    def page_state(self) -> dict[str, Any]:
        now = time.time()
        alerts = self.engine.open_alerts()
        phase = self.phase.data.get("current")
        f = self.current_figures()
        state = snapshot(self.cfg, f, self.live(), phase, self.budgets, alerts, self.obs, self.board, now)
        state["reviews"] = self.reviews.board() if self.reviews is not None else {"pending": 0, "newest": []}
        return state

    async def dashboard_loop(self) -> None:
        board = self.cfg.monitor.dashboard
        period = max(0.05, float(board.refresh))
        asked = 0.0
        while True:
            watched = self.dashboard is not None and bool(self.dashboard.clients)
            if watched or time.monotonic() - asked > BUDGETS_UNWATCHED_S:  # fresh enough for a page opening
                asked = time.monotonic()
                try:
                    self.budgets = await self.call(
                        subjects.SVC_BUDGET_SUMMARY, SummaryRequest(), LEDGER_SUMMARY, timeout=min(1.0, period)
                    )
                except Exception:  # no budget_guard answering: the page says so
                    self.budgets = None
            now = time.time()
            window = float(self.cfg.monitor.window)
            point = self.board.sample(now, self.obs, self.live(), self.summary, float(board.rate_window), window)
            if watched and self.dashboard is not None:  # the state only for pages watching
                self.dashboard.broadcast("point", point)
                self.dashboard.broadcast("state", self.page_state())
            await asyncio.sleep(period)

    async def ack_from_page(self, alert_id: str, by: str) -> bool:
        """An operator acknowledged from the page: the same AckAlert command as ``orchestra alerts ack``."""
        if alert_id not in self.engine.by_id or not self.engine.by_id[alert_id].open:
            return False
        cmd = AckAlert(alert_id=alert_id, by=by, at=time.time())
        await self.publish(subjects.command(cmd), cmd)
        return True

    @property
    def metrics_port(self) -> int:
        return self.server.port


if __name__ == "__main__":  # pragma: no cover
    from bus.runner import main

    main(DiversityMonitor)
