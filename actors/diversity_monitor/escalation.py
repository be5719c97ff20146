"""Escalation and digests, pure (the paper's §10.2 escalation policy and "daily digests over constant
pings"). Time is passed in; what to send is decided here, sending is the notifiers' job.

    steps_for(rule, severity, alerts_cfg) -> [EscalationStepCfg]   the rule's own `notify`, or its severity's
    due_steps(alert, steps, now) -> [(index, step)]                 what to carry out now
    alert_message(alert, rule) -> (subject, text)
    digest_message(kind, alerts, ..., now, figures) -> (subject, text)
    daily_trigger("09:00") / weekly_trigger("mon 09:00") -> cron fields for apscheduler

A step with ``after: 0`` runs when the alert is raised; a later step runs only while the alert is
still open and unacknowledged that long after it was raised. Digest steps are never "due": the alert
goes into the next daily or weekly digest instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from actors.diversity_monitor.rules import Alert
from schemas.base import Severity
from schemas.config.ops import AlertRuleCfg, AlertsCfg, EscalationStepCfg
from schemas.config.units import Duration

DigestKind = Literal["daily", "weekly"]
DIGEST_SPAN: dict[str, float] = {"daily": 86400.0, "weekly": 7 * 86400.0}
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_DOW = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def steps_for(rule: AlertRuleCfg | None, severity: Severity, alerts: AlertsCfg) -> list[EscalationStepCfg]:
    if rule is not None and rule.notify is not None:
        return [EscalationStepCfg(after=Duration(0), notify=list(rule.notify))]
    return list(alerts.escalation.get(severity, []))


def due_steps(alert: Alert, steps: list[EscalationStepCfg], now: float) -> list[tuple[int, EscalationStepCfg]]:
    if not alert.open:
        return []
    out = []
    for i, step in enumerate(steps):
        if i in alert.steps_done or step.digest is not None:
            continue
        if float(step.after) > 0 and alert.acked_at is not None:
            continue
        if now - alert.raised_at >= float(step.after):
            out.append((i, step))
    return out


def digest_kind(steps: list[EscalationStepCfg]) -> str | None:
    return next((s.digest for s in steps if s.digest is not None), None)


def _when(ts: float) -> str:
    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _context(context: dict[str, Any]) -> list[str]:
    return [f"  {k}: {v}" for k, v in context.items()]


def alert_message(alert: Alert, rule: AlertRuleCfg | None, step: int = 0) -> tuple[str, str]:
    """Subject and text of one alert notification (Slack text, or an e-mail)."""
    head = f"[orchestra] {alert.severity.upper()}: {alert.description}"
    subject = head if step == 0 else f"{head} (unacknowledged, escalation step {step + 1})"
    lines = [
        f"{alert.severity.upper()} alert {alert.alert_id}: {alert.description}",
        f"rule: {alert.rule}, raised {_when(alert.raised_at)}, state: {alert.state}",
    ]
    if rule is not None and rule.rationale:
        lines.append(f"why it matters: {rule.rationale}")
    lines.append("figures:")
    lines.extend(_context(alert.context))
    if alert.remediations:
        lines.append(f"auto-remediation taken: {', '.join(alert.remediations)}")
    lines.append(f"acknowledge with: orchestra alerts ack {alert.alert_id}")
    return subject, "\n".join(lines)


def resolved_message(alert: Alert) -> tuple[str, str]:
    subject = f"[orchestra] resolved: {alert.description}"
    text = f"alert {alert.alert_id} ({alert.rule}) resolved at {_when(alert.resolved_at or alert.raised_at)}"
    return subject, text


def digest_message(
    kind: str,
    alerts: Iterable[Alert],
    digest_rules: set[str],
    now: float,
    figures: dict[str, float],
) -> tuple[str, str]:
    """The daily or weekly summary: the alerts routed to this digest raised in its period, a count of
    every alert in the period by severity, and the current figures (diversity, spend, traffic)."""
    since = now - DIGEST_SPAN[kind]
    period = sorted((a for a in alerts if a.raised_at >= since), key=lambda a: a.raised_at)
    mine = [a for a in period if a.rule in digest_rules]
    counts: dict[str, int] = {}
    for a in period:
        counts[a.severity] = counts.get(a.severity, 0) + 1
    subject = f"[orchestra] {kind} digest: {len(mine)} alert(s) for review"
    lines = [f"LLM Orchestra {kind} digest, {_when(since)} to {_when(now)}", ""]
    lines.append(f"Alerts for this digest ({len(mine)}):")
    for a in mine:
        lines.append(f"- {_when(a.raised_at)} {a.severity.upper()} {a.alert_id}: {a.description} [{a.state}]")
        lines.extend("  " + line for line in _context(a.context))
    if not mine:
        lines.append("- none")
    order = ("critical", "high", "medium", "low")
    tally = ", ".join(f"{counts[s]} {s}" for s in order if s in counts) or "none"
    lines += ["", f"All alerts in the period: {tally}"]
    lines += ["", "Figures now:"]
    lines += [f"  {k}: {v:g}" for k, v in sorted(figures.items())]
    return subject, "\n".join(lines)


def daily_trigger(text: str) -> dict[str, int]:
    """'09:00' -> {'hour': 9, 'minute': 0}."""
    m = _HHMM.match(text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"alerts.digests.daily_at: {text!r} is not a time of day such as '09:00'")
    return {"hour": int(m.group(1)), "minute": int(m.group(2))}


def weekly_trigger(text: str) -> dict[str, Any]:
    """'mon 09:00' -> {'day_of_week': 'mon', 'hour': 9, 'minute': 0}."""
    day, _, clock = text.strip().partition(" ")
    if day.lower()[:3] not in _DOW:
        raise ValueError(f"alerts.digests.weekly_at: {text!r} must start with a weekday such as 'mon'")
    try:
        fields = daily_trigger(clock)
    except ValueError:
        raise ValueError(f"alerts.digests.weekly_at: {text!r} is not a weekday and time such as 'mon 09:00'") from None
    return {"day_of_week": day.lower()[:3], **fields}
