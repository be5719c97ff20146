"""The alert desk: what happens when the engine raises or resolves an alert (the I/O around the pure
rules, remediation and escalation modules).

    raised   -> AlertRaised event; the rule's auto-remediation (commands + a Remediation event naming the
                alert); the escalation steps that are due at once (notifications, Notified events)
    tick     -> later escalation steps of unacknowledged alerts; remediation an alert still lacks
                (raised just before a restart)
    resolved -> AlertResolved event; an overflow this alert switched on is switched off again
    digests  -> daily and weekly summaries on the apscheduler cron, to ``alerts.digests.notify``

Events that record a decision carry a Msg-Id derived from the alert id, so a retry or a restart cannot
store them twice; commands carry ``command_id`` = the same id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from actors.diversity_monitor import escalation, remediation
from actors.diversity_monitor.metrics import Metrics
from actors.diversity_monitor.notify import Notifier, build_notifiers, deliver
from actors.diversity_monitor.rules import Alert, Engine
from bus import subjects
from schemas.codec import encode
from schemas.config.ops import AlertsCfg
from schemas.events import AlertAcknowledged, AlertRaised, AlertResolved, Event, Notified, Remediation

log = logging.getLogger(__name__)

PlanFor = Callable[..., remediation.Plan]  # (action, alert, now[, why]) -> the remediation to carry out
Publish = Callable[..., Awaitable[Any]]  # (subject, obj, *, msg_id=..., timeout=...): stored in JetStream


class Desk:
    def __init__(
        self,
        alerts_cfg: AlertsCfg,
        engine: Engine,
        metrics: Metrics,
        *,
        plan: PlanFor,
        figures: Callable[[float], dict[str, float]],
        publish: Publish,
        name: str,
    ) -> None:
        self.alerts_cfg = alerts_cfg
        self.engine = engine
        self.metrics = metrics
        self.plan = plan
        self.figures = figures  # the digest's figures at a time
        self.publish = publish
        self.name = name
        self.notifiers: dict[str, Notifier] = {}
        self.session: aiohttp.ClientSession | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.background: set[asyncio.Task[Any]] = set()
        self.daily = escalation.daily_trigger(self.alerts_cfg.digests.daily_at)  # ValueError: bad config
        self.weekly = escalation.weekly_trigger(self.alerts_cfg.digests.weekly_at)

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self, due: Callable[[str], Awaitable[None]]) -> None:
        """``due(kind)``: a digest's time came (the monitor turns it into a message and calls ``digest``)."""
        self.session = aiohttp.ClientSession()
        self.notifiers = build_notifiers(self.alerts_cfg.notifiers, self.session)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every job at INFO
        self.scheduler = AsyncIOScheduler()
        self.scheduler.add_job(due, CronTrigger(**self.daily), args=["daily"], id="daily")
        self.scheduler.add_job(due, CronTrigger(**self.weekly), args=["weekly"], id="weekly")
        self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.background:
            await asyncio.wait(list(self.background), timeout=5.0)
        if self.session is not None:
            await self.session.close()

    def steps(self, alert: Alert) -> list[Any]:
        return escalation.steps_for(self.alerts_cfg.rules.get(alert.rule), alert.severity, self.alerts_cfg)

    # --- transitions -----------------------------------------------------------------------------
    async def raised(self, alert: Alert, now: float) -> None:
        log.warning("alert %s raised (%s, %s): %s", alert.alert_id, alert.rule, alert.severity, alert.context)
        event = AlertRaised(
            alert_id=alert.alert_id,
            rule=alert.rule,
            severity=alert.severity,
            context=alert.context,
            action=alert.action,
            at=alert.raised_at,
        )
        await self.record(event, f"{alert.alert_id}:raised")
        await self.tick(now)

    async def resolved(self, alert: Alert) -> None:
        log.info("alert %s resolved (%s)", alert.alert_id, alert.rule)
        await self.record(
            AlertResolved(alert_id=alert.alert_id, rule=alert.rule, at=alert.resolved_at or 0.0),
            f"{alert.alert_id}:resolved",
        )
        undo = remediation.undo_overflow(alert.commands)
        if undo:
            plan = remediation.Plan("overflow_off", undo, "backlog resolved: overflow switched off")
            await self.carry_out(alert, plan, step=None, tag="undo")

    async def acknowledged(self, alert: Alert) -> None:
        log.info("alert %s acknowledged by %s", alert.alert_id, alert.acked_by or "someone")
        await self.record(
            AlertAcknowledged(alert_id=alert.alert_id, by=alert.acked_by, at=alert.acked_at or 0.0),
            f"{alert.alert_id}:acked",
        )

    async def tick(self, now: float) -> None:
        """Remediation still owed, then the escalation steps that are due."""
        for alert in self.engine.open_alerts():
            if alert.action != "none" and not alert.remediations:
                await self.carry_out(alert, self.plan(alert.action, alert, now), step=None)
            for index, step in escalation.due_steps(alert, self.steps(alert), now):
                alert.steps_done.add(index)
                for channel in step.notify:
                    subject, text = escalation.alert_message(alert, self.alerts_cfg.rules.get(alert.rule), index)
                    self.spawn(self.notify(channel, subject, text, alert.alert_id, index))
                if step.action == "disable_premium":
                    why = f"{alert.alert_id} unacknowledged for {float(step.after):g}s"
                    await self.carry_out(alert, self.plan("cost_spike", alert, now, why), step=index)

    # --- doing -----------------------------------------------------------------------------------
    async def carry_out(self, alert: Alert, plan: remediation.Plan, step: int | None, tag: str = "") -> None:
        """Send the plan's commands and record them with the alert that caused them."""
        key = f"{alert.alert_id}:{tag or ('fix' if step is None else f'step{step}')}"
        sent: list[str] = []
        for i, cmd in enumerate(plan.commands):
            cmd = msgspec.structs.replace(cmd, command_id=f"{key}:{i}", at=time.time(), by=self.name)
            try:
                await self.publish(subjects.command(cmd), cmd, msg_id=cmd.command_id)
            except Exception as exc:  # the bus is down: the next tick tries again (nothing recorded yet)
                log.warning("alert %s: could not send %s: %s", alert.alert_id, type(cmd).__name__, exc)
                return
            sent.append(encode(cmd).decode())
            alert.commands.append(cmd)
        alert.remediations.append(plan.action)
        self.metrics.remediations.labels(alert.rule, plan.action).inc()
        log.warning("alert %s: remediation %s: %s", alert.alert_id, plan.action, plan.detail)
        event = Remediation(
            alert_id=alert.alert_id, rule=alert.rule, action=plan.action, commands=sent, detail=plan.detail, step=step
        )
        await self.record(event, key)

    async def notify(self, channel: str, subject: str, text: str, alert_id: str | None, step: int | None) -> None:
        notifier = self.notifiers.get(channel)
        problem = "no such notifier" if notifier is None else await deliver(notifier, subject, text)
        self.metrics.notifications.labels(channel, "ok" if problem is None else "failed").inc()
        if problem is not None:
            log.warning("notification to %s failed: %s", channel, problem)
        what = f"step {step + 1}" if step is not None else subject
        event = Notified(alert_id=alert_id, channel=channel, ok=problem is None, detail=problem or what, step=step)
        await self.record(event, f"{alert_id}:notify:{step}:{channel}" if alert_id else None)

    async def digest(self, kind: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        rules = {r for r in self.alerts_cfg.rules if escalation.digest_kind(self.steps_for_rule(r)) == kind}
        alerts = list(self.engine.history) + self.engine.open_alerts()
        subject, text = escalation.digest_message(kind, alerts, rules, now, self.figures(now))
        log.info("%s digest: %s", kind, subject)
        channels = self.alerts_cfg.digests.notify
        await asyncio.gather(*(self.notify(ch, subject, text, None, None) for ch in channels))
        if not channels:
            await self.record(Notified(alert_id=None, channel="log", detail=subject), None)

    def steps_for_rule(self, rule: str) -> list[Any]:
        cfg = self.alerts_cfg.rules[rule]
        return escalation.steps_for(cfg, cfg.severity, self.alerts_cfg)

    def run_digest_now(self, kind: str) -> None:
        """Make the scheduler fire a digest job now (operators and tests)."""
        assert self.scheduler is not None
        job = self.scheduler.get_job(kind)
        if job is not None:
            job.modify(next_run_time=datetime.now(self.scheduler.timezone))

    # --- plumbing --------------------------------------------------------------------------------
    async def record(self, event: Event, msg_id: str | None) -> None:
        event = msgspec.structs.replace(event, at=event.at or time.time(), source=self.name)
        try:
            await self.publish(subjects.event(event), event, msg_id=msg_id, timeout=10.0)
        except Exception as exc:
            log.warning("could not record %s: %s", type(event).__name__, exc)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
