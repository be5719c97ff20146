"""The alert rule engine, pure: rules from the config, conditions over metrics and windows, a state
machine per rule, alert ids and history. Time is passed in; the engine does no I/O.

    engine = Engine(cfg.alerts.rules)
    changes = engine.evaluate(measure, now)   # measure(metric, window) -> Measure
    engine.ack(alert_id, by, now)             # -> the alert, or None for an unknown id
    engine.restore(event)                     # rebuild state from stored alert events after a restart

A rule holds when every condition holds (AND). A condition over a rate is unknown while its window
has fewer than ``min_samples`` requests; unknown never raises or resolves an alert, and it restarts
the ``sustained`` clock. Per rule:

    quiet --holds--> pending --held for `sustained`--> firing --ack--> acknowledged
      ^                 |                                |                 |
      +--- not holds ---+------------- not holds: resolved ----------------+
"""

from __future__ import annotations

import contextlib
import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from actors.diversity_monitor.window import Measure
from schemas.base import Severity
from schemas.codec import COMMAND
from schemas.commands import Command
from schemas.config.ops import AlertRuleCfg, ConditionCfg
from schemas.errors import SchemaError
from schemas.events import AlertAcknowledged, AlertRaised, AlertResolved, Event, Notified, Remediation

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
HISTORY = 1000  # finished alerts kept for digests and `orchestra alerts list`

Measurer = Callable[[str, float | None], Measure]


@dataclass
class Alert:
    alert_id: str
    rule: str
    severity: Severity
    raised_at: float
    context: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    action: str = "none"
    acked_at: float | None = None
    acked_by: str = ""
    resolved_at: float | None = None
    steps_done: set[int] = field(default_factory=set)  # escalation steps already carried out
    remediations: list[str] = field(default_factory=list)  # actions taken, in order
    commands: list[Command] = field(default_factory=list)  # commands sent for it, in order

    @property
    def state(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "acknowledged" if self.acked_at is not None else "firing"

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class Raised:
    alert: Alert


@dataclass(frozen=True)
class Resolved:
    alert: Alert


Change = Raised | Resolved


def alert_id(rule: str, now: float, taken: set[str]) -> str:
    """``<rule>-<UTC time>``, with a counter when that id was used already."""
    base = f"{rule}-{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def check(cond: ConditionCfg, m: Measure, min_samples: int) -> bool | None:
    """True / False, or None when unknown (no value, or too few samples behind a rate)."""
    if m.value is None:
        return None
    if m.samples is not None and m.samples < min_samples:
        return None
    return OPS[cond.op](m.value, cond.value)


def holds(rule: AlertRuleCfg, measure: Measurer) -> tuple[bool | None, dict[str, Any]]:
    """Whether every condition holds, and the figures behind the answer (the alert's context)."""
    context: dict[str, Any] = {}
    verdicts = []
    for cond in rule.when:
        m = measure(cond.metric, float(cond.window) if cond.window else None)
        key = cond.metric if not cond.window else f"{cond.metric}[{_span(float(cond.window))}]"
        context[key] = None if m.value is None else round(m.value, 6)
        context[f"{key} threshold"] = f"{cond.op} {cond.value:g}"
        if m.samples is not None:
            context[f"{key} samples"] = m.samples
        if m.detail:
            context[f"{key} detail"] = m.detail
        verdicts.append(check(cond, m, rule.min_samples))
    if any(v is False for v in verdicts):
        return False, context
    if any(v is None for v in verdicts):
        return None, context
    return True, context


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class Engine:
    def __init__(self, rules: dict[str, AlertRuleCfg]) -> None:
        self.rules = rules
        self.pending_since: dict[str, float] = {}
        self.active: dict[str, Alert] = {}  # rule -> its open alert
        self.by_id: dict[str, Alert] = {}
        self.history: deque[Alert] = deque(maxlen=HISTORY)  # resolved alerts, oldest first

    def evaluate(self, measure: Measurer, now: float) -> list[Change]:
        changes: list[Change] = []
        for name, rule in self.rules.items():
            verdict, context = holds(rule, measure)
            alert = self.active.get(name)
            if verdict is True:
                since = self.pending_since.setdefault(name, now)
                if alert is None and now - since >= float(rule.sustained):
                    alert = Alert(
                        alert_id=alert_id(name, now, set(self.by_id)),
                        rule=name,
                        severity=rule.severity,
                        raised_at=now,
                        context=context,
                        description=rule.description or name,
                        action=rule.action,
                    )
                    self.active[name] = alert
                    self.by_id[alert.alert_id] = alert
                    changes.append(Raised(alert))
                elif alert is not None:
                    alert.context = context
            else:
                self.pending_since.pop(name, None)
                if verdict is False and alert is not None:
                    self._resolve(alert, now)
                    changes.append(Resolved(alert))
        return changes

    def _resolve(self, alert: Alert, now: float) -> None:
        alert.resolved_at = now
        self.active.pop(alert.rule, None)
        self.history.append(alert)
        while len(self.by_id) > HISTORY + len(self.active):
            oldest = next(iter(self.by_id))
            if self.by_id[oldest].open:
                break
            del self.by_id[oldest]

    def ack(self, alert_id: str, by: str, now: float) -> Alert | None:
        """Acknowledge an alert (stops its escalation). Acknowledging twice changes nothing."""
        alert = self.by_id.get(alert_id)
        if alert is not None and alert.acked_at is None:
            alert.acked_at, alert.acked_by = now, by
        return alert

    def open_alerts(self) -> list[Alert]:
        return sorted(self.active.values(), key=lambda a: a.raised_at)

    def restore(self, ev: Event) -> None:
        """Fold one stored alert event (in stream order) into the state: after a restart the open
        alerts, their acknowledgements, escalation steps and remediations are known again."""
        match ev:
            case AlertRaised():
                if ev.alert_id in self.by_id:
                    return
                rule = self.rules.get(ev.rule)
                alert = Alert(
                    alert_id=ev.alert_id,
                    rule=ev.rule,
                    severity=ev.severity,
                    raised_at=ev.at,
                    context=dict(ev.context),
                    description=rule.description if rule and rule.description else ev.rule,
                    action=ev.action or "none",
                )
                previous = self.active.get(ev.rule)
                if previous is not None:
                    self._resolve(previous, ev.at)
                self.by_id[alert.alert_id] = alert
                self.active[ev.rule] = alert
                self.pending_since[ev.rule] = ev.at
            case AlertResolved():
                found = self.by_id.get(ev.alert_id)
                if found is not None and found.open:
                    self._resolve(found, ev.at)
            case AlertAcknowledged():
                self.ack(ev.alert_id, ev.by, ev.at)
            case Notified(alert_id=str(aid)) if ev.step is not None:
                notified = self.by_id.get(aid)
                if notified is not None:
                    notified.steps_done.add(ev.step)
            case Remediation():
                fixed = self.by_id.get(ev.alert_id)
                if fixed is not None:
                    fixed.remediations.append(ev.action)
                    for text in ev.commands:
                        with contextlib.suppress(SchemaError):
                            fixed.commands.append(COMMAND.decode(text))
                    if ev.step is not None:
                        fixed.steps_done.add(ev.step)
