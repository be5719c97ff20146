"""How each limit of the ledger stands, and its one-shot notifications, read from its state (pure, like
the ledger it is part of).

    limit_status(now)     spent and held per limit this period (the summary's ``limits``)
    prune(now)            forget period sums older than two months
    due(now)              soft thresholds crossed, caps reached and the cost spike, not yet marked
    cap_reached(lim, now) a hard cap reached (spent, or a reservation was denied): once per period
    spike(now)            the paper's rule (§10.2): daily API spend or spend velocity over its limit
    claim(key)            take a notification (synchronously: concurrent handlers send it once)

Each ``Due`` is sent once: the actor emits its event, then stores ``Marked(key)`` (``Ledger.apply``).
The API spend velocity is a window of per-second sums (``_api_recent``), fed by the ledger's charges.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from policy.limits import PERIODS, Calendar, Limit
from policy.money import NANOS, to_nanos
from schemas.budget import LimitStatus
from schemas.config.ops import BudgetsCfg
from schemas.events import BudgetThreshold, CostSpike, Event

MONTH_S = 31 * 86400


@dataclass(frozen=True)
class Due:
    """A notification that should go out once: emit ``event``, then record ``Marked(key)``."""

    key: str
    event: Event
    spike: bool = False


class Notices:
    """The notification half of :class:`policy.ledger.Ledger` (which holds the state it reads)."""

    cfg: BudgetsCfg
    limits: list[Limit]
    calendar: Calendar
    spent: dict[tuple[str, str], int]
    held: dict[str, int]
    marks: set[str]
    _api_recent: deque[tuple[float, int]]  # (second, nanos) of API charges, for velocity
    _api_recent_sum: int  # their sum, kept as they come and go (no scan per charge)

    def due(self, now: float) -> list[Due]:
        """Soft thresholds crossed, caps reached and the cost spike, not yet marked."""
        out: list[Due] = []
        for lim in self.limits:
            if not lim.hard_nanos:
                continue
            pk = self.calendar.period_key(lim.period, now)
            spent = self.spent.get((lim.scope, pk), 0)
            for fraction in lim.soft:
                key = f"soft:{lim.id}:{pk}:{fraction:g}"
                if spent >= fraction * lim.hard_nanos and key not in self.marks:
                    out.append(Due(key, self._threshold(lim, spent, fraction, hard=False)))
            if spent >= lim.hard_nanos:
                due = self.cap_reached(lim, now)
                if due is not None:
                    out.append(due)
        spike = self.spike(now)
        if spike is not None:
            out.append(spike)
        return out

    def cap_reached(self, lim: Limit, now: float) -> Due | None:
        """The hard cap of ``lim`` is reached (spent, or a reservation was denied): once per period."""
        pk = self.calendar.period_key(lim.period, now)
        key = f"cap:{lim.id}:{pk}"
        if key in self.marks or not lim.hard_nanos:
            return None
        spent = self.spent.get((lim.scope, pk), 0)
        return Due(key, self._threshold(lim, spent, spent / lim.hard_nanos, hard=True))

    @staticmethod
    def _threshold(lim: Limit, spent: int, fraction: float, *, hard: bool) -> BudgetThreshold:
        return BudgetThreshold(
            scope=lim.id,
            spent_usd=spent / NANOS,
            limit_usd=(lim.hard_nanos or 0) / NANOS,
            fraction=round(fraction, 4),
            hard=hard,
        )

    def _recent_api(self, at: float, nanos: int) -> None:
        """One API charge into the velocity window, summed per second (at most ``spike.window`` entries
        whatever the rate); a charge stamped before the newest second counts in that second."""
        second = float(math.floor(at))
        if self._api_recent and self._api_recent[-1][0] >= second:
            last_at, last_nanos = self._api_recent[-1]
            self._api_recent[-1] = (last_at, last_nanos + nanos)
        else:
            self._api_recent.append((second, nanos))
        self._api_recent_sum += nanos

    def velocity(self, now: float) -> float:
        """USD per hour of API spend over the spike window."""
        window = float(self.cfg.spike.window)
        if window <= 0:
            return 0.0
        while self._api_recent and self._api_recent[0][0] <= now - window:
            self._api_recent_sum -= self._api_recent.popleft()[1]
        if self._api_recent and self._api_recent[-1][0] > now:  # charges stamped later than `now` (replay)
            total = sum(n for at, n in self._api_recent if at <= now)
        else:
            total = self._api_recent_sum
        return total / NANOS / (window / 3600.0)

    def daily_api(self, now: float) -> int:
        return self.spent.get(("api", self.calendar.day_key(now)), 0)

    def spike(self, now: float) -> Due | None:
        """The paper's rule (§10.2): daily API spend over ``spike.daily_usd`` (or spend velocity over
        ``spike.velocity_usd_per_hour``) disables ``spike.disable_tier``; once per day."""
        cfg = self.cfg.spike
        key = f"spike:{self.calendar.day_key(now)}"
        if key in self.marks:
            return None
        daily = self.daily_api(now)
        velocity = self.velocity(now)
        if daily > to_nanos(cfg.daily_usd):
            reason = f"daily API spend ${daily / NANOS:.2f} is over ${cfg.daily_usd:.2f}"
        elif cfg.velocity_usd_per_hour is not None and velocity > cfg.velocity_usd_per_hour:
            reason = (
                f"API spend velocity ${velocity:.2f}/h over the last {float(cfg.window) / 60:g} min "
                f"is over ${cfg.velocity_usd_per_hour:.2f}/h"
            )
        else:
            return None
        event = CostSpike(
            daily_usd=daily / NANOS,
            velocity_usd_per_hour=round(velocity, 6),
            limit_usd=cfg.daily_usd,
            reason=reason,
        )
        return Due(key, event, spike=True)

    def claim(self, key: str) -> bool:
        """Take a notification (synchronously, so concurrent handlers send it once)."""
        if key in self.marks:
            return False
        self.marks.add(key)
        return True

    def limit_status(self, now: float) -> list[LimitStatus]:
        out = []
        for lim in self.limits:
            pk = self.calendar.period_key(lim.period, now)
            out.append(
                LimitStatus(
                    scope=lim.id,
                    period_key=pk,
                    spent_usd=self.spent.get((lim.scope, pk), 0) / NANOS,
                    held_usd=self.held.get(lim.scope, 0) / NANOS,
                    hard_usd=lim.hard_usd,
                    soft=list(lim.soft),
                )
            )
        return out

    def prune(self, now: float) -> None:
        """Forget period sums older than two months (the charge keys bound themselves: ``chargebook``)."""
        self.velocity(now)  # trims the velocity window
        keep = {self.calendar.period_key(p, t) for p in PERIODS for t in (now, now - MONTH_S, now - 2 * MONTH_S)}
        oldest_day = self.calendar.day_key(now - 2 * MONTH_S)
        for scope, pk in list(self.spent):
            if pk not in keep and (len(pk) == 7 or pk < oldest_day):
                del self.spent[(scope, pk)]
