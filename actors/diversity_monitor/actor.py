"""The diversity_monitor: diversity metrics over the results, alert rules with auto-remediation,
escalation and digests, phase 3's automatic grading (grading.py), and Prometheus metrics on one HTTP endpoint.

It reads results (``orch.result.>``), every event (``orch.event.>``) and the alert commands with durable
consumers, and the live state (hosts, queues, tiers, providers, phase, the overflow switches) with KV watches. At start
it replays the stored history it needs (the metric windows, today's spend, every alert event), so a
restart loses no window and no alert; deliveries the replay already covered are acknowledged unread.
Every ``alerts.evaluate_every`` the rules are evaluated; every ``monitor.report_every`` the diversity
figures are published as ``diversity.report`` events (and ``diversity.low`` when they drop).

Consumers and timers only make messages (``messages.py``); ``handle`` is the one place they are matched.
Its helpers (the desk, the feed, the grader) get what they need, never the monitor.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from actors.diversity_monitor import remediation
from actors.diversity_monitor.audit import audit_records
from actors.diversity_monitor.board import Board, snapshot
from actors.diversity_monitor.desk import Desk
from actors.diversity_monitor.diversity import Summary
from actors.diversity_monitor.embedding import Embedder, load_embedder
from actors.diversity_monitor.errors import EmbedderUnavailable
from actors.diversity_monitor.feed import Feed, command, warm_up
from actors.diversity_monitor.figures import digest_figures, figures
from actors.diversity_monitor.grading import Grader
from actors.diversity_monitor.messages import (
    AlertCommand,
    CheckSeen,
    DashboardTick,
    DigestDue,
    EvaluateTick,
    EventSeen,
    MonitorMsg,
    ReportTick,
    ResultSeen,
    ReviewCommand,
)
from actors.diversity_monitor.metrics import Figures, LabelSets, Metrics, MetricsServer
from actors.diversity_monitor.reporting import report_events
from actors.diversity_monitor.reviews import EVENT_SUBJECTS as REVIEW_EVENTS
from actors.diversity_monitor.reviews import Reviews
from actors.diversity_monitor.rules import Alert, Engine, Raised
from actors.diversity_monitor.web import Dashboard
from actors.diversity_monitor.window import LiveState, Observations
from bus import subjects
from bus.actor import Actor
from bus.consumer import OFF_PATH_CONCURRENCY, OFF_PATH_LINGER, ConsumerSpec
from bus.kv import LiveView
from bus.overflow import Overflow
from schemas.budget import LEDGER_SUMMARY, LedgerSummary, SummaryRequest
from schemas.codec import EVENT, Codec
from schemas.commands import AckAlert, DecideReview
from schemas.config.root import OrchestraConfig
from schemas.events import DiversityLow
from schemas.state import HostState, PhaseState, ProviderState, QueueState, TierState

COMMAND_SUBJECTS = (subjects.ALERT_ACK,)
T = TypeVar("T")
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
        families = {m.family for m in cfg.models.values()} | ({"embedding"} if cfg.embedding_models else set())
        models = [*cfg.models, *cfg.embedding_models]  # cloud embeddings are charged through a result too
        self.metrics = Metrics(self.current_figures, LabelSets.of(models, cfg.hosts, cfg.providers, families))
        self.desk = Desk(cfg.alerts, self.engine, self.metrics, plan=self.plan, figures=self.digest_figures,
                         publish=self.publish, name=self.name)  # fmt: skip  # bad digest times: a ValueError
        self.hosts: LiveView[HostState] | None = None  # the KV watches: opened at start
        self.queues: LiveView[QueueState] | None = None
        self.tiers: LiveView[TierState] | None = None
        self.providers: LiveView[ProviderState] | None = None
        self.phase: LiveView[PhaseState] | None = None
        self.overflow: Overflow | None = None  # the overflow switches (orch_overflow, the rotator's)
        self.server = MetricsServer(self.metrics, cfg.monitor.metrics_host, cfg.monitor.metrics_port)
        board = cfg.monitor.dashboard
        self.board = Board(int(float(board.history) / max(0.05, float(board.refresh))), board.tail)
        self.budgets: LedgerSummary | None = None  # the budget_guard's ledger, asked each refresh
        self.dashboard: Dashboard | None = None  # made at start (its token file is I/O)
        self.embedder: Embedder | None = embedder  # None: load the cache's MiniLM at start
        self.own_embedder = embedder is None
        self.summary: Summary | None = None
        self.replayed: dict[str, int] = {}  # stream -> last sequence the start-up replay read
        self.reported_at: int | None = None  # answers seen when the last report turn looked
        self.budgets_asked = 0.0  # monotonic time the budget_guard's summary was last asked
        self.low: set[str | None] = set()  # groups whose diversity is reported low
        self.evaluations = 0
        self.heartbeat_s = max([float(h.heartbeat) for h in cfg.hosts.values()] or [2.0])
        self.reviews: Reviews | None = None  # the review queue and measured quality (opened at start)
        self.grader = Grader(  # phase 3: a sampled share of answers graded by the phase's evaluator
            cfg, self.metrics, phase=self.current_phase, get_last_msg=self.last_msg, publish=self.publish,
            emit=self.emit, check=self.quality_check,
        )  # fmt: skip
        self.feed = Feed(self.obs, self.metrics, self.board, self.horizon, grade=self.grader.on_outcome,
                         tail=self.tail, embedder=lambda: self.embedder,
                         embed_per_s=cfg.monitor.embed_per_s)  # fmt: skip

    def consumers(self) -> list[ConsumerSpec]:
        defaults = {**self.consumer_defaults(), "concurrency": 4}
        return [
            ConsumerSpec(
                stream=subjects.RESULTS_STREAM,
                durable=self.name,
                subjects=(subjects.RESULT_ALL,),
                handler=self.deliver(ResultSeen),
                description="results and failed attempts",
                # in batches, after the answer
                **{**defaults, "concurrency": OFF_PATH_CONCURRENCY, "linger": OFF_PATH_LINGER},
            ),
            ConsumerSpec(
                stream=subjects.EVENTS_STREAM,
                durable=self.name,
                subjects=(subjects.EVENT_ALL,),
                handler=self.deliver(EventSeen),
                description="every event",
                **defaults,
            ),
            ConsumerSpec(
                stream=subjects.COMMANDS_STREAM,
                durable=self.name,
                subjects=COMMAND_SUBJECTS,  # in order
                handler=self.deliver(AlertCommand),
                description="alert acks",
                **{**defaults, "concurrency": 1},
            ),
            ConsumerSpec(
                stream=subjects.EVENTS_STREAM,
                durable=f"{self.name}-quality",
                subjects=REVIEW_EVENTS,
                handler=self.deliver(CheckSeen),
                description="escalations (the review queue) and premium validations (measured quality)",
                **{**defaults, "concurrency": 1},
            ),
            ConsumerSpec(
                stream=subjects.COMMANDS_STREAM,
                durable=f"{self.name}-reviews",
                subjects=(subjects.REVIEW_COMMANDS,),
                handler=self.deliver(ReviewCommand),
                description="the operator's review decisions",
                **{**defaults, "concurrency": 1},
            ),
        ]

    async def on_start(self) -> None:
        self.hosts = LiveView(self.js, subjects.KV_HOSTS, Codec(HostState))
        self.queues = LiveView(self.js, subjects.KV_QUEUES, Codec(QueueState))
        self.tiers = LiveView(self.js, subjects.KV_TIERS, Codec(TierState))
        self.providers = LiveView(self.js, subjects.KV_PROVIDERS, Codec(ProviderState))
        self.phase = LiveView(self.js, subjects.KV_PHASE, Codec(PhaseState))
        self.overflow = Overflow(self.js)
        views: list[LiveView[Any]] = [self.hosts, self.queues, self.tiers, self.providers, self.phase]
        views.append(self.overflow.view)
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
        self.replayed = await warm_up(self.js, self.feed, self.engine, float(self.cfg.bus.streams.history))
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
            self.every("dashboard", max(0.05, float(self.cfg.monitor.dashboard.refresh)), DashboardTick, first=0.0)
        await self.desk.start(self.digest_due)
        self.every("evaluate", max(0.05, float(self.cfg.alerts.evaluate_every)), EvaluateTick, first=0.0)
        self.every("report", max(0.05, float(self.cfg.monitor.report_every)), ReportTick)

    async def on_stop(self) -> None:
        await self.desk.stop()
        if self.dashboard is not None:
            self.dashboard.close()
        await self.server.stop()
        close = getattr(self.embedder, "close", None)
        if self.own_embedder and close is not None:
            close()

    # --- the one entry point --------------------------------------------------------------------
    async def handle(self, msg: MonitorMsg) -> None:
        match msg:
            case ResultSeen(d):
                if d.stream_seq > self.replayed.get(subjects.RESULTS_STREAM, 0):
                    await self.feed.result(d.subject, d.data, d.published_at, live=True)
            case EventSeen(d):
                if d.stream_seq > self.replayed.get(subjects.EVENTS_STREAM, 0):
                    self.feed.event(d.data, d.published_at, live=True)
            case AlertCommand(d):
                cmd = command(d.data)
                if isinstance(cmd, AckAlert):
                    await self.acknowledge(cmd)
            case CheckSeen(d):  # an escalation or a premium validation (SchemaError: dead-lettered)
                if self.reviews is not None:
                    await self.reviews.on_event(EVENT.decode(d.data), d.stream_seq)
            case ReviewCommand(d):
                cmd = command(d.data)
                if isinstance(cmd, DecideReview) and self.reviews is not None:
                    await self.reviews.decide(cmd)
            case EvaluateTick():
                await self.evaluate(time.time())
            case ReportTick():
                await self.report_turn()
            case DashboardTick():
                await self.refresh_dashboard()
            case DigestDue(kind):
                await self.desk.digest(kind)

    async def digest_due(self, kind: str) -> None:  # a coroutine: apscheduler runs plain functions in a thread
        await self.handle(DigestDue(kind))

    async def acknowledge(self, cmd: AckAlert) -> None:
        alert = self.engine.by_id.get(cmd.alert_id)
        if alert is None:
            self.log.warning("ack for unknown alert %s (by %s)", cmd.alert_id, cmd.by or "?")
        elif alert.acked_at is None:
            self.engine.ack(cmd.alert_id, cmd.by, cmd.at or time.time())
            await self.desk.acknowledged(alert)

    async def quality_check(self, model: str, passed: bool, **kw: Any) -> None:
        """A grader's verdict into the measured quality (the review queue's records)."""
        if self.reviews is not None:
            await self.reviews.check(model, passed, **kw)

    async def last_msg(self, stream: str, subject: str) -> Any:
        return await self.js.get_last_msg(stream, subject)

    def current_phase(self) -> str:
        state = self.phase.data.get("current") if self.phase is not None else None
        return state.phase if state is not None else self.cfg.rotator.initial_phase

    def tail(self, line: dict[str, Any]) -> None:
        if self.dashboard is not None:
            self.dashboard.broadcast("tail", line)

    # --- the clock -------------------------------------------------------------------------------
    def live(self) -> LiveState:
        return LiveState(
            hosts=_data(self.hosts), queues=_data(self.queues), tiers=_data(self.tiers), heartbeat_s=self.heartbeat_s
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

    async def report_turn(self) -> None:
        """The figures of the window; reported when answers came in since the last turn."""
        now = time.time()
        since = now - float(self.cfg.monitor.window)
        self.summary = self.obs.summary(since, now)
        seen = self.obs.answers_seen
        if self.obs.total(since, now).answers and seen != self.reported_at:
            await self.report(self.summary)
        self.reported_at = seen

    async def report(self, summary: Summary) -> None:
        window, threshold = float(self.cfg.monitor.window), self.cfg.monitor.min_unique_approaches
        events, self.low = report_events(summary, window, threshold, self.low)
        for event in events:
            await self.emit(event)
            if isinstance(event, DiversityLow):
                m = summary.tasks[event.task or ""]
                self.log.warning("diversity low on task %s: %d unique approaches in %d answers",
                                 event.task, m.unique_approaches, m.answers)  # fmt: skip

    # --- for the desk and the metrics endpoint ---------------------------------------------------
    def plan(self, action: str, alert: Alert, now: float, why: str = "") -> remediation.Plan:
        rule = self.cfg.alerts.rules.get(alert.rule)
        overflowing = set(self.overflow.tiers()) if self.overflow is not None else set()
        return remediation.plan_for(
            action, rule, now, why, cfg=self.cfg, obs=self.obs, live=self.live(), horizon=self.horizon,
            overflowing=overflowing,
        )  # fmt: skip

    def current_figures(self) -> Figures:
        now = time.time()
        return figures(
            self.cfg, self.obs, self.live(), _data(self.providers), self.summary, self.engine.open_alerts(), now
        )

    def digest_figures(self, now: float) -> dict[str, float]:
        return digest_figures(self.current_figures())

    # --- the dashboard ---------------------------------------------------------------------------
    def page_state(self) -> dict[str, Any]:
        now = time.time()
        alerts = self.engine.open_alerts()
        phase = _data(self.phase).get("current")
        f = self.current_figures()
        state = snapshot(self.cfg, f, self.live(), phase, self.budgets, alerts, self.obs, self.board, now)
        state["reviews"] = self.reviews.board() if self.reviews is not None else {"pending": 0, "newest": []}
        return state

    async def refresh_dashboard(self) -> None:
        board = self.cfg.monitor.dashboard
        period = max(0.05, float(board.refresh))
        watched = self.dashboard is not None and bool(self.dashboard.clients)
        if watched or time.monotonic() - self.budgets_asked > BUDGETS_UNWATCHED_S:  # fresh for a page opening
            self.budgets_asked = time.monotonic()
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


def _data(view: LiveView[T] | None) -> dict[str, T]:
    return view.data if view is not None else {}


if __name__ == "__main__":  # pragma: no cover
    from bus.runner import main

    main(DiversityMonitor)
