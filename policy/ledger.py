"""The spend ledger as a state machine (pure: no I/O, no logging, no clock of its own).

Its state is a fold of ledger entries (``schemas.budget``): ``Reserved``, ``Released``, ``Charged``,
``Marked``. The live actor and a restart apply the same entries through :meth:`Ledger.apply`, so the
rebuilt ledger is the ledger. What it holds:

    reservations   open holds, by id and (request id, attempt)
    held[scope]    the sum of open holds per scope
    spent[(scope, period key)]   charged nano-dollars per scope per day and month
    charges        the keys of the last charges (idempotency: a key is charged once) and running sums
                   over every charge (count, nano-dollars, per tier, digest): ``chargebook``, bounded
    marks          one-shot notifications already sent (thresholds, spikes)

How each limit stands, the one-shot notifications (thresholds, caps, the cost spike, the API spend
velocity behind it) and the pruning of old period sums work on the same state: ``ledger_notices.py``.

Check-and-hold is one synchronous call (:meth:`try_reserve`): nothing can interleave between the
check of every limit and the hold, so concurrent reservations can never overshoot a hard cap.

Each hold covers one attempt (or, a lease, the attempts drawn from it) until that attempt's own
outcome is charged: its result, or its ``AttemptFailed``. A request's final outcome frees nothing
else: an attempt the router gave up on (its attempt timeout) is not cancelled, its provider call
goes on, and the cloud_proxy charges a late answer as ``AttemptFailed`` with its cost; had the final
outcome freed that hold, the late cost would land on no hold and could pass a cap.

Expiry: a hold stops counting once the time passed in is past its ``expires_at`` (the request's
deadline + ``reservation_grace``; workers stop at the deadline, so their outcomes are stored before
then) and every result stored up to ``expires_at`` is charged: :attr:`Ledger.charged_through`, which
the actor advances as its RESULTS consumer catches up (infinity by default: plain data). A guard that
was down or behind thus charges a late result against its hold, never against a hold it let expire.

Settlement is decided before the ``Charged`` entry is stored (:meth:`settles`, synchronous) and applied
after: the hold it settles is claimed meanwhile, so an expiry applied first (the guard stores charges
concurrently) leaves that hold to its charge instead of freeing it early.

Leases. A lease is a hold (``Reserved(lease=True)``) that one router draws many attempts' worst cases
from, locally. Its hold is ``amount - used``, where ``used`` grows by the undrawn remainder the router
releases when it retires the lease (once: ``Released(amount_nanos=...)``) and by each draw a charge
settles (``Charged.reserved_nanos``: the attempt's worst case; its cost when that is unknown). Each
draw, i.e. (request id, attempt), is settled against the lease at most once. The invariant, for a
lease of amount A:

    drawn      = sum of w_i over the attempts i the router drew (w_i = the attempt's worst case)
    released   = A - drawn when retired, else 0           (the router releases only what it did not draw)
    hold       = A - released - sum of w_i over settled i
               = (A - drawn if not retired) + sum of w_i over unsettled i
              >= sum of w_i over unsettled i  >=  sum of c_i over unsettled i   (each cost c_i <= w_i)

so spent + held covers every cost still to come, exactly as per-request holds do: a grant checks
spent + held + amount <= cap, and a charge adds c_i to spent while it takes w_i >= c_i from held, so
spent + held never passes a cap. (A charge whose draw is unknown takes c_i: still hold >= the rest.)
``used`` is a sum and the hold is clamped at 0 only when it is read, so applying a lease's entries in
any order gives the same hold: the rebuilt ledger equals the live one. A retired lease that holds
nothing more is dropped; an unretired one (its router died) stays until it expires, at the latest
request deadline it serves + ``reservation_grace``.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import defaultdict, deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import msgspec

from policy import draws as lease_draws
from policy.chargebook import KEEP_KEYS, ChargeBook
from policy.ledger_notices import Notices
from policy.limits import Calendar, Limit, limits_of, scopes_of
from policy.money import to_nanos
from schemas.budget import (
    Charged,
    DenyReason,
    LedgerEntry,
    LedgerSummary,
    Marked,
    Released,
    Reserved,
    ReserveRequest,
)
from schemas.config.ops import BudgetsCfg


@dataclass(frozen=True)
class Reservation:
    id: str
    request_id: str
    attempt: int
    scopes: tuple[str, ...]
    amount: int
    expires_at: float
    lease: bool = False
    used: int = 0  # a lease: its released remainder + the draws charges settled against it
    retired: bool = False  # a lease whose undrawn remainder was released: nothing more is drawn from it

    @property
    def hold(self) -> int:
        return max(0, self.amount - self.used)


@dataclass(frozen=True)
class Decision:
    granted: bool
    reservation: Reservation | None = None
    entry: Reserved | None = None  # to persist; None when an open reservation was returned again
    reason: DenyReason = ""
    limit: Limit | None = None  # the limit that denied it
    scope: str | None = None
    remaining: int | None = None  # nanos left under the tightest hard limit


class Ledger(Notices):
    def __init__(self, cfg: BudgetsCfg, *, keep_keys: int = KEEP_KEYS) -> None:
        self.cfg = cfg
        self.limits = limits_of(cfg)
        self.calendar = Calendar(cfg.timezone)
        self.reservations: dict[str, Reservation] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, id); settled ids are skipped
        self._by_attempt: dict[tuple[str, int], str] = {}  # per-request holds only, never leases
        self._leases: dict[str, str] = {}  # a lease's request id -> its reservation id
        self.draws: lease_draws.Draws = {}  # lease -> its settled draws, as hashes (policy/draws.py)
        self._settling: dict[str, set[str]] = {}  # hold -> keys of the charges being stored to settle it
        self.held: dict[str, int] = defaultdict(int)
        self.spent: dict[tuple[str, str], int] = defaultdict(int)
        self.charges = ChargeBook(keep=keep_keys)
        self.marks: set[str] = set()
        self._api_recent: deque[tuple[float, int]] = deque()  # (second, nanos) of API charges, for velocity
        self._api_recent_sum = 0  # their sum, kept as they come and go (no scan per charge)
        self.entries_applied = 0
        # Every result stored before this time is charged (epoch s; the actor's RESULTS watermark).
        self.charged_through = math.inf

    # --- reservations ----------------------------------------------------------------------------
    def open_reservation(self, request_id: str, attempt: int) -> Reservation | None:
        rid = self._by_attempt.get((request_id, attempt))
        return self.reservations.get(rid) if rid else None

    def try_reserve(
        self,
        req: ReserveRequest,
        *,
        reservation_id: str,
        now: float,
        disabled_tiers: Collection[str] = (),
    ) -> Decision:
        """Check every hard limit and hold the amount, in one step. The caller persists
        ``decision.entry`` and calls :meth:`rollback` if that fails."""
        self.expire(now)
        if req.lease:
            lease_id = self._leases.get(req.request_id)
            existing = self.reservations.get(lease_id) if lease_id else None
            if existing is not None and existing.retired:  # a lease id serves once: never hand it out again
                return Decision(False, reason="ledger_unavailable", scope=f"lease:{req.request_id}")
        else:
            existing = self.open_reservation(req.request_id, req.attempt)
        if existing is not None:
            return Decision(True, reservation=existing, remaining=self._remaining(existing.scopes, now))
        if req.tier in disabled_tiers:
            return Decision(False, reason="tier_disabled", scope=f"tier:{req.tier}")
        amount = to_nanos(req.amount_usd)
        scopes = scopes_of(req.tier, req.provider, req.model, req.client_key)
        for limit in self._hard_limits(scopes):
            assert limit.hard_nanos is not None
            used = self.spent[(limit.scope, self.calendar.period_key(limit.period, now))] + self.held[limit.scope]
            if used + amount > limit.hard_nanos:
                return Decision(
                    False,
                    reason="budget_exceeded",
                    limit=limit,
                    scope=limit.id,
                    remaining=max(0, limit.hard_nanos - used),
                )
        deadline = req.deadline if req.deadline > 0 else now + float(self.cfg.reservation_ttl)
        entry = Reserved(
            at=now,
            reservation_id=reservation_id,
            request_id=req.request_id,
            attempt=req.attempt,
            tier=req.tier,
            provider=req.provider,
            model=req.model,
            client_key=req.client_key,
            amount_nanos=amount,
            expires_at=max(deadline, now) + float(self.cfg.reservation_grace),
            lease=req.lease,
        )
        self.apply(entry)
        reservation = self.reservations[reservation_id]
        return Decision(True, reservation=reservation, entry=entry, remaining=self._remaining(scopes, now))

    def rollback(self, reservation_id: str) -> None:
        """Undo a hold whose ``Reserved`` entry could not be stored."""
        self._drop(reservation_id)

    def expire(self, now: float) -> list[Reservation]:
        """Drop the holds past their expiry, ``now`` and :attr:`charged_through` both past it."""
        gone, later = [], []
        horizon = min(now, self.charged_through)
        while self._expiry and self._expiry[0][0] <= horizon:
            at, rid = heapq.heappop(self._expiry)
            if self._settling.get(rid):  # a charge against it is being stored: it settles it first
                later.append((at, rid))
                continue
            r = self._drop(rid)  # None: settled or released already
            if r is not None:
                gone.append(r)
        for item in later:  # looked at again on the next call
            heapq.heappush(self._expiry, item)
        return gone

    def _hard_limits(self, scopes: tuple[str, ...]) -> Iterator[Limit]:
        return (lim for lim in self.limits if lim.hard_nanos is not None and lim.scope in scopes)

    def _remaining(self, scopes: tuple[str, ...], now: float) -> int | None:
        left = [
            lim.hard_nanos - self.spent[(lim.scope, self.calendar.period_key(lim.period, now))] - self.held[lim.scope]
            for lim in self._hard_limits(scopes)
            if lim.hard_nanos is not None
        ]
        return max(0, min(left)) if left else None

    def _hold(self, r: Reservation) -> None:
        self.reservations[r.id] = r
        heapq.heappush(self._expiry, (r.expires_at, r.id))
        if r.lease:
            self._leases[r.request_id] = r.id
        else:
            self._by_attempt[(r.request_id, r.attempt)] = r.id
        self._add_held(r.scopes, r.hold)

    def _add_held(self, scopes: tuple[str, ...], nanos: int) -> None:
        if not nanos:
            return
        for scope in scopes:
            self.held[scope] += nanos
            if not self.held[scope]:
                del self.held[scope]

    def _drop(self, reservation_id: str) -> Reservation | None:
        r = self.reservations.pop(reservation_id, None)
        if r is None:
            return None
        self._settling.pop(r.id, None)
        if r.lease:
            if self._leases.get(r.request_id) == r.id:
                del self._leases[r.request_id]
            self.draws.pop(r.id, None)
        if self._by_attempt.get((r.request_id, r.attempt)) == r.id:
            del self._by_attempt[(r.request_id, r.attempt)]
        self._add_held(r.scopes, -r.hold)
        return r

    def _use(self, r: Reservation, nanos: int, *, retire: bool = False) -> None:
        """Take ``nanos`` from a lease's hold (a settled draw, or its released remainder)."""
        new = dataclasses.replace(r, used=r.used + max(0, nanos), retired=r.retired or retire)
        self.reservations[r.id] = new
        self._add_held(r.scopes, new.hold - r.hold)
        if new.retired and not new.hold:  # nothing drawn is left to settle: it is done
            self._drop(r.id)

    # --- leases ----------------------------------------------------------------------------------
    def settles(self, c: Charged) -> Charged:
        """Which hold a result or failed attempt settles, decided before its ``Charged`` entry is
        stored (the entry records it): the lease it names, if that is open and this (request, attempt)
        draw is not settled yet (claimed now, synchronously: a second outcome of the same attempt is
        charged, unreserved); else the open reservation of its (request, attempt), as always."""
        if c.outcome not in ("result", "failed"):
            return c
        r = self.reservations.get(c.reservation_id) if c.reservation_id else None
        if r is not None and r.lease:
            if not lease_draws.claim(self.draws, r.id, c.request_id, c.attempt, c.key):
                return msgspec.structs.replace(c, reservation_id=None, reserved_nanos=0)
        else:
            r = self.open_reservation(c.request_id, c.attempt)
            c = msgspec.structs.replace(c, reservation_id=r.id if r else None, reserved_nanos=0)
        if r is not None:  # until it is applied, expiry does not free this hold
            self._settling.setdefault(r.id, set()).add(c.key)
        return c

    def unclaim(self, c: Charged) -> None:
        """The entry that :meth:`settles` decided was not stored: its draw is open again."""
        lease_draws.unclaim(self.draws, c.reservation_id or "", c.request_id, c.attempt, c.key)
        self._unsettling(c)

    def _unsettling(self, c: Charged) -> None:
        keys = self._settling.get(c.reservation_id or "")
        if keys is not None:
            keys.discard(c.key)
            if not keys:
                del self._settling[c.reservation_id or ""]

    def releasable(self, reservation_id: str, amount_nanos: int | None) -> int | None:
        """What a release would free now (None: nothing to release: unknown, settled, or a retired lease)."""
        r = self.reservations.get(reservation_id)
        if r is None or r.retired:  # a lease is released once (its one Released entry retires it)
            return None
        if not r.lease or amount_nanos is None:
            return r.hold
        return min(amount_nanos, r.hold)

    # --- the fold ---------------------------------------------------------------------------------
    def apply(self, entry: LedgerEntry) -> bool:
        """Apply one entry (live, after it is stored, or on replay). Idempotent. True if it changed
        the ledger."""
        self.entries_applied += 1
        match entry:
            case Reserved():
                if entry.reservation_id in self.reservations:
                    return False
                self._hold(
                    Reservation(
                        id=entry.reservation_id,
                        request_id=entry.request_id,
                        attempt=entry.attempt,
                        scopes=scopes_of(entry.tier, entry.provider, entry.model, entry.client_key),
                        amount=entry.amount_nanos,
                        expires_at=entry.expires_at,
                        lease=entry.lease,
                    )
                )
                return True
            case Released():
                r = self.reservations.get(entry.reservation_id)
                if r is None:
                    return False
                if not r.lease or entry.amount_nanos is None:
                    return self._drop(r.id) is not None
                if r.retired:  # a lease is released once
                    return False
                self._use(r, entry.amount_nanos, retire=True)
                return True
            case Charged():
                return self._charge(entry)
            case Marked():
                if entry.key in self.marks:
                    return False
                self.marks.add(entry.key)
                return True
        return False  # pragma: no cover - the union is closed

    def is_charged(self, key: str) -> bool:
        return key in self.charges

    def _charge(self, c: Charged) -> bool:
        if not self.charges.add(c.key, c.cost_nanos, c.tier):
            return False
        if c.cost_nanos:
            day, month = self.calendar.day_key(c.at), self.calendar.month_key(c.at)
            for scope in scopes_of(c.tier, c.provider, c.model, c.client_key):
                self.spent[(scope, day)] += c.cost_nanos
                self.spent[(scope, month)] += c.cost_nanos
            if c.tier not in (None, "local"):
                self._recent_api(c.at, c.cost_nanos)
        r = self.reservations.get(c.reservation_id) if c.reservation_id else None
        if r is not None and r.lease:
            if lease_draws.claim(self.draws, r.id, c.request_id, c.attempt, c.key):  # each draw is settled once
                self._use(r, c.reserved_nanos or c.cost_nanos)
        self._unsettling(c)
        if r is not None and not r.lease and not self._settling.get(r.id):  # (the last charge being stored drops it)
            self._drop(r.id)
        # A final outcome frees no other attempt's hold: an abandoned attempt may still be charged.
        return True

    # --- housekeeping and views ------------------------------------------------------------------
    def charged_total(self) -> int:
        return self.charges.nanos

    def by_tier(self) -> dict[str, int]:
        return dict(self.charges.by_tier)

    def digest(self) -> str:
        return self.charges.digest()

    def summary(self, now: float) -> LedgerSummary:
        self.expire(now)
        return LedgerSummary(
            charges=self.charges.count,
            spent_nanos=self.charged_total(),
            digest=self.digest(),
            open_reservations=len(self.reservations),
            held_nanos=sum(r.hold for r in self.reservations.values()),
            open_leases=len(self._leases),
            by_tier=self.by_tier(),
            limits=self.limit_status(now),
        )
