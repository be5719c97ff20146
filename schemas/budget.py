"""The budget_guard's contract: reservation services (core NATS request/reply) and its ledger entries.

    orch.svc.budget.reserve   ReserveRequest  -> ReserveReply    before dispatching to a paid target
    orch.svc.budget.release   ReleaseRequest  -> ReleaseReply    a reservation the router will not use
    orch.svc.budget.summary   SummaryRequest  -> LedgerSummary   spend, holds and limits right now
    orch.ledger.<kind>        LedgerEntry (stream LEDGER, written by the one budget_guard)

Money on the ledger is integer nano-dollars (``*_nanos``: 1 USD = 10**9) so that sums never drift;
the services speak USD floats for convenience and round to the nano-dollar on the way in.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from schemas.base import Message, RequestId, Tagged, Tier
from schemas.codec import Codec

DenyReason = Literal["", "budget_exceeded", "tier_disabled", "ledger_unavailable", "hold_too_large"]


# --- services ------------------------------------------------------------------------------------
class ReserveRequest(Message, frozen=True, kw_only=True):
    """Hold ``amount_usd`` (the worst case: an upper bound on the input tokens x input price +
    max_tokens x output price, ``policy.pricing``)
    for one attempt of one request. Idempotent: the same (request_id, attempt) while its reservation
    is open gets the same reservation back."""

    request_id: RequestId
    attempt: Annotated[int, Meta(ge=0)] = 0
    tier: Tier
    provider: str | None = None
    model: str
    client_key: str | None = None
    amount_usd: Annotated[float, Meta(ge=0)]
    deadline: float = 0.0  # the request's deadline (epoch s); the hold expires after it (+ grace)
    # A lease: one hold the router draws the worst cases of many attempts from, locally (request_id
    # "lease-<router>-<n>", attempt 0, deadline = the latest request deadline it serves). Its
    # reservation id is its request id. Denied leases raise no "cap reached" notification.
    lease: bool = False


class ReserveReply(Message, frozen=True, kw_only=True):
    granted: bool
    reservation_id: str | None = None  # put it in Dispatch.reservation_id
    reason: DenyReason = ""
    scope: str | None = None  # the limit that denied it, e.g. "tier:premium:daily", or "tier:premium"
    amount_usd: float = 0.0
    remaining_usd: float | None = None  # under the tightest hard limit after this reservation (or when denied)
    expires_at: float = 0.0
    amount_nanos: int = 0  # the hold, exactly (a lease's draws are counted against it)


class ReleaseRequest(Message, frozen=True, kw_only=True):
    reservation_id: str
    reason: str = ""
    # A lease: release only this much (its undrawn remainder; the drawn part stays held until each
    # draw is settled or the lease expires). Once per lease. None: release the whole hold.
    amount_nanos: Annotated[int, Meta(ge=0)] | None = None


class ReleaseReply(Message, frozen=True, kw_only=True):
    released: bool  # False: unknown, already settled, released or expired (nothing to do)
    amount_usd: float = 0.0


class SummaryRequest(Message, frozen=True, kw_only=True):
    pass


class LimitStatus(Message, frozen=True, kw_only=True):
    scope: str  # "tier:premium:daily"
    period_key: str  # "2026-11-22" or "2026-11"
    spent_usd: float
    held_usd: float
    hard_usd: float | None
    soft: list[float] = []


class LedgerSummary(Message, frozen=True, kw_only=True):
    """The live ledger: what the budget_guard holds in memory (rebuilt from LEDGER on start)."""

    instance: str = ""
    charges: int  # charge records retained (one per stored result / failed attempt)
    spent_nanos: int  # their sum
    digest: str  # sha256 over the sorted "key=nanos" lines of those charges
    open_reservations: int  # leases included
    held_nanos: int
    by_tier: dict[str, int] = {}  # nanos
    limits: list[LimitStatus] = []
    disabled_tiers: list[str] = []
    entries_replayed: int = 0  # LEDGER entries read at start
    open_leases: int = 0
    replay_ms: float = 0.0


# --- ledger entries (stream LEDGER, orch.ledger.<kind>) ---------------------------------------------
# Amounts on the ledger are never negative: an entry that says otherwise does not decode (and a
# rebuild dead-letters it instead of folding it in).
NonNegative = Annotated[int, Meta(ge=0)]


class Entry(Tagged, frozen=True, kw_only=True):
    at: float  # when it happened (charges: the result's time), epoch seconds


class Reserved(Entry, frozen=True, kw_only=True, tag="reserved"):
    reservation_id: str
    request_id: str
    attempt: int
    tier: Tier
    provider: str | None = None
    model: str
    client_key: str | None = None
    amount_nanos: NonNegative
    expires_at: float
    lease: bool = False  # a lease (ReserveRequest.lease): charges carrying its id consume their draw from it


class Released(Entry, frozen=True, kw_only=True, tag="released"):
    reservation_id: str
    reason: str = ""  # "released" (by the router), "rolled_back" (its Reserved entry may not be stored)
    amount_nanos: NonNegative | None = None  # a lease's undrawn remainder (it is retired); None: the whole hold


ChargeKind = Literal["result", "aggregate", "error", "failed"]


class Charged(Entry, frozen=True, kw_only=True, tag="charged"):
    """One stored RESULTS message, charged once. ``key`` is that message's Msg-Id: ``<id>`` for the
    final outcome, ``<id>:<attempt>:failed`` for a failed attempt. It settles the hold of its own
    (request, attempt) only: another attempt of the request keeps its hold until its own outcome is
    charged (an abandoned attempt may still cost money) or the hold expires. Against a lease, the
    charge frees its draw (``reserved_nanos``, or its cost when that is unknown) from the lease's hold."""

    key: str
    outcome: ChargeKind
    request_id: str
    attempt: int = 0
    tier: Tier | None = None
    provider: str | None = None
    model: str | None = None
    client_key: str | None = None
    input_tokens: NonNegative = 0
    output_tokens: NonNegative = 0
    cost_nanos: NonNegative = 0
    reservation_id: str | None = None  # the reservation it settled, if one was open
    reserved_nanos: NonNegative = 0  # against a lease: the draw it settles (the attempt's worst case)

    @property
    def final(self) -> bool:
        return self.outcome != "failed"


class Marked(Entry, frozen=True, kw_only=True, tag="marked"):
    """A one-shot notification that went out (a soft threshold, a hard denial, a spike), so that a
    restart does not send it again."""

    key: str


LedgerEntry = Reserved | Released | Charged | Marked

RESERVE_REQUEST: Codec[ReserveRequest] = Codec(ReserveRequest)
RESERVE_REPLY: Codec[ReserveReply] = Codec(ReserveReply)
RELEASE_REQUEST: Codec[ReleaseRequest] = Codec(ReleaseRequest)
RELEASE_REPLY: Codec[ReleaseReply] = Codec(ReleaseReply)
SUMMARY_REQUEST: Codec[SummaryRequest] = Codec(SummaryRequest)
LEDGER_SUMMARY: Codec[LedgerSummary] = Codec(LedgerSummary)
LEDGER_ENTRY: Codec[LedgerEntry] = Codec(LedgerEntry)
