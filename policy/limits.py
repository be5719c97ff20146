"""Budget scopes and windows (pure).

A charge or a reservation counts in every scope it belongs to::

    total                 everything
    api                   every tier but local (the paper's "daily API spend", watched for spikes)
    tier:<tier>           local | together | premium
    provider:<provider>   a cloud provider (openai, anthropic, gemini, together)
    model:<model>         a library model
    key:<client key id>   the client's API key id

A limit (``budgets.limits[i]``) names one scope and a period, ``daily`` or ``monthly``, which start at
midnight / on the 1st in ``budgets.timezone``. Its id is ``<scope>:<period>`` (``tier:premium:daily``).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from policy.money import to_nanos
from schemas.config.ops import BudgetLimitCfg, BudgetsCfg

Period = Literal["daily", "monthly"]
PERIODS: tuple[Period, ...] = ("daily", "monthly")


def scopes_of(tier: str | None, provider: str | None, model: str | None, client_key: str | None) -> tuple[str, ...]:
    scopes = ["total"]
    if tier is not None:
        if tier != "local":
            scopes.append("api")
        scopes.append(f"tier:{tier}")
    if provider and tier not in (None, "local"):
        scopes.append(f"provider:{provider}")
    if model:
        scopes.append(f"model:{model}")
    if client_key:
        scopes.append(f"key:{client_key}")
    return tuple(scopes)


def scope_of(limit: BudgetLimitCfg) -> str:
    return "total" if limit.scope == "total" else f"{limit.scope}:{limit.name}"


@dataclass(frozen=True)
class Limit:
    scope: str
    period: Period
    hard_nanos: int | None
    soft: tuple[float, ...]

    @property
    def id(self) -> str:
        return f"{self.scope}:{self.period}"

    @property
    def hard_usd(self) -> float | None:
        return None if self.hard_nanos is None else self.hard_nanos / 1e9


def limits_of(cfg: BudgetsCfg) -> list[Limit]:
    return [
        Limit(
            scope=scope_of(limit),
            period=limit.period,
            hard_nanos=None if limit.hard_usd is None else to_nanos(limit.hard_usd),
            soft=tuple(sorted(set(limit.soft))),
        )
        for limit in cfg.limits
    ]


class Calendar:
    """Period keys and boundaries in one time zone: ``2026-11-22`` (daily), ``2026-11`` (monthly)."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.tz = zoneinfo.ZoneInfo(timezone)
        self._day: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) of the last day asked for
        self._month: tuple[float, float, str] = (0.0, 0.0, "")

    def local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.tz)

    def day_key(self, t: float) -> str:
        start, end, key = self._day
        if start <= t < end:
            return key
        d = self.local(t).date()
        key = d.isoformat()
        self._day = (datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp(), self.next_day_start(t), key)
        return key

    def month_key(self, t: float) -> str:
        start, end, key = self._month
        if start <= t < end:
            return key
        d = self.local(t)
        key = f"{d.year:04d}-{d.month:02d}"
        self._month = (datetime(d.year, d.month, 1, tzinfo=self.tz).timestamp(), self.next_month_start(t), key)
        return key

    def period_key(self, period: Period, t: float) -> str:
        return self.day_key(t) if period == "daily" else self.month_key(t)

    def next_day_start(self, t: float) -> float:
        """Epoch seconds of the next local midnight (DST-safe: built from the calendar date)."""
        day = self.local(t).date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp()

    def next_month_start(self, t: float) -> float:
        d = self.local(t)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return datetime(year, month, 1, tzinfo=self.tz).timestamp()
