"""What the diversity_monitor handles: the one union its ``handle`` matches on.

    ResultSeen(d)       a final outcome or a failed attempt (RESULTS)
    EventSeen(d)        any event (EVENTS)
    AlertCommand(d)     an operator's AckAlert (COMMANDS, in order)
    CheckSeen(d)        an escalation or a premium validation (EVENTS: the review queue, measured quality)
    ReviewCommand(d)    an operator's review decision (COMMANDS)
    EvaluateTick()      the alert rules' turn (every ``alerts.evaluate_every``)
    ReportTick()        the diversity report's turn (every ``monitor.report_every``)
    DashboardTick()     the dashboard's refresh (every ``monitor.dashboard.refresh``)
    DigestDue(kind)     the daily or weekly digest's time came (the desk's cron)

Consumers, watches and timers only make these; ``handle`` matches on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.consumer import Delivery


@dataclass(frozen=True)
class ResultSeen:
    d: Delivery


@dataclass(frozen=True)
class EventSeen:
    d: Delivery


@dataclass(frozen=True)
class AlertCommand:
    d: Delivery


@dataclass(frozen=True)
class CheckSeen:
    d: Delivery


@dataclass(frozen=True)
class ReviewCommand:
    d: Delivery


@dataclass(frozen=True)
class EvaluateTick:
    pass


@dataclass(frozen=True)
class ReportTick:
    pass


@dataclass(frozen=True)
class DashboardTick:
    pass


@dataclass(frozen=True)
class DigestDue:
    kind: str  # "daily" | "weekly"


MonitorMsg = (
    ResultSeen
    | EventSeen
    | AlertCommand
    | CheckSeen
    | ReviewCommand
    | EvaluateTick
    | ReportTick
    | DashboardTick
    | DigestDue
)
