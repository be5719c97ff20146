"""What the budget_guard handles: the one union its ``handle`` matches on.

ResultStored(d)          orch.result.> from its RESULTS consumer: settle (charge once, free the hold)
TierCommand(d)           SetTier from its COMMANDS consumer (in order): write orch_tiers
Reserve(req)             orch.svc.budget.reserve: check every hard limit and hold (the reply is returned)
Release(req)             orch.svc.budget.release: drop a hold (the reply is returned)
Summary(req)             orch.svc.budget.summary: the live ledger (the reply is returned)
ReenableDue(tier, until) apscheduler: a disable's ``until`` came
SweepTick()              every 5 s: expire holds, prune, send what is due, re-enable overdue tiers
WatermarkTick()          every second: how far RESULTS is charged (``watermark.py``)
SnapshotTick()           every ``budgets.snapshot_every``: store the next ledger snapshot
SpaceTick()              every 30 s: LEDGER half full? a snapshot, and the entries two snapshots cover go
LeaseLost(reason)        the writer lease lapsed: stop writing, exit
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.consumer import Delivery
from schemas.base import Tier
from schemas.budget import ReleaseRequest, ReserveRequest, SummaryRequest


@dataclass(frozen=True)
class ResultStored:
    d: Delivery


@dataclass(frozen=True)
class TierCommand:
    d: Delivery


@dataclass(frozen=True)
class Reserve:
    req: ReserveRequest


@dataclass(frozen=True)
class Release:
    req: ReleaseRequest


@dataclass(frozen=True)
class Summary:
    req: SummaryRequest


@dataclass(frozen=True)
class ReenableDue:
    tier: Tier
    until: float


@dataclass(frozen=True)
class SweepTick:
    pass


@dataclass(frozen=True)
class WatermarkTick:
    pass


@dataclass(frozen=True)
class SnapshotTick:
    pass


@dataclass(frozen=True)
class SpaceTick:
    pass


@dataclass(frozen=True)
class LeaseLost:
    reason: str


BudgetMsg = (
    ResultStored
    | TierCommand
    | Reserve
    | Release
    | Summary
    | ReenableDue
    | SweepTick
    | WatermarkTick
    | SnapshotTick
    | SpaceTick
    | LeaseLost
)
