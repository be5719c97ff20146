"""A ledger's whole state as bytes, and back (pure: no I/O).

A snapshot is the fold of the LEDGER entries up to one stream sequence (``covers_seq``), so a restart
restores it and applies only the entries after that sequence: the same fold, a fraction of the reading.
It also holds what the LEDGER no longer does: entries older than ``budgets.ledger_history`` age out of
the stream, but their sums live on in each new snapshot (history beyond retention is compacted into it).

The snapshot is written from a pure fold (restore the previous one, apply the stored entries after it),
never from the live ledger, whose holds and claims run ahead of what is stored.
"""

from __future__ import annotations

import zlib
from collections import defaultdict, deque

import msgspec

from policy.draws import Draws, draw_id, owner_of
from policy.ledger import Ledger, Reservation
from schemas.config.ops import BudgetsCfg

FORMAT = 3  # 3: lease draws as hashes (2: as strings); 2: charges as key hashes + running sums (1: every charge)
READS = (2, 3)  # a format-2 snapshot is read too: its draws are hashed on the way in


class LedgerState(msgspec.Struct, array_like=True, frozen=True):
    """Every field of a :class:`Ledger` that its entries built (claims in flight excepted: a fold has none)."""

    format: int
    reservations: list[Reservation]
    expiry: list[tuple[float, str]]
    by_attempt: list[tuple[str, int, str]]
    leases: dict[str, str]
    # format 3: [lease reservation id, draw_id(request id, attempt), owner_of(request id, attempt, charge key)]
    # format 2: [lease reservation id, request id, attempt, charge key]
    draws: list[list[str | int]]
    held: dict[str, int]
    spent: list[tuple[str, str, int]]  # scope, period key, nanos
    charge_keys: list[bytes]  # chargebook: sorted uint64 key hashes per chunk, oldest first
    charged: int  # every charge ever applied: count, nano-dollars, per tier, digest sum (hex)
    charged_nanos: int
    charged_by_tier: dict[str, int]
    charged_digest: str
    marks: list[str]
    api_recent: list[tuple[float, int]]
    api_recent_sum: int
    entries_applied: int


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(LedgerState)


class SnapshotError(ValueError):
    """The bytes are not a ledger snapshot this code can read (a rebuild from LEDGER is the answer)."""


def export(ledger: Ledger) -> bytes:
    state = LedgerState(
        format=FORMAT,
        reservations=list(ledger.reservations.values()),
        expiry=list(ledger._expiry),
        by_attempt=[(req, attempt, rid) for (req, attempt), rid in ledger._by_attempt.items()],
        leases=dict(ledger._leases),
        draws=[[lease, draw, owner] for lease, d in ledger.draws.items() for draw, owner in d.items()],
        held={k: v for k, v in ledger.held.items() if v},
        spent=[(scope, period, n) for (scope, period), n in ledger.spent.items() if n],
        charge_keys=ledger.charges.export_keys(),
        charged=ledger.charges.count,
        charged_nanos=ledger.charges.nanos,
        charged_by_tier=dict(ledger.charges.by_tier),
        charged_digest=ledger.charges.digest(),
        marks=sorted(ledger.marks),
        api_recent=list(ledger._api_recent),
        api_recent_sum=ledger._api_recent_sum,
        entries_applied=ledger.entries_applied,
    )
    return zlib.compress(_ENCODER.encode(state), 1)


def restore(cfg: BudgetsCfg, data: bytes) -> Ledger:
    try:
        state = _DECODER.decode(zlib.decompress(data))
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"not a ledger snapshot: {exc}") from exc
    if state.format not in READS:
        raise SnapshotError(f"ledger snapshot format {state.format}, this code reads {', '.join(map(str, READS))}")
    ledger = Ledger(cfg)
    ledger.reservations = {r.id: r for r in state.reservations}
    ledger._expiry = list(state.expiry)  # stored as the heap it was
    ledger._by_attempt = {(req, att): rid for req, att, rid in state.by_attempt}
    ledger._leases = dict(state.leases)
    try:
        ledger.draws = _draws_of(state)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"not a ledger snapshot: its lease draws: {exc}") from exc
    ledger.held = defaultdict(int, state.held)
    ledger.spent = defaultdict(int, {(scope, period): n for scope, period, n in state.spent})
    ledger.charges.restore_keys(state.charge_keys)
    ledger.charges.count = state.charged
    ledger.charges.nanos = state.charged_nanos
    ledger.charges.by_tier = dict(state.charged_by_tier)
    ledger.charges.acc = int(state.charged_digest, 16)
    ledger.marks = set(state.marks)
    ledger._api_recent = deque(state.api_recent)
    ledger._api_recent_sum = state.api_recent_sum
    ledger.entries_applied = state.entries_applied
    return ledger


def _draws_of(state: LedgerState) -> Draws:
    draws: Draws = {}
    for row in state.draws:
        lease, *rest = row
        if state.format == 2:
            req, att, key = rest
            rest = [draw_id(str(req), int(att)), owner_of(str(req), int(att), str(key))]
        draw, owner = rest
        if not isinstance(lease, str) or not isinstance(draw, int) or not isinstance(owner, int):
            raise TypeError(f"a draw of types {[type(x).__name__ for x in row]}")
        draws.setdefault(lease, {})[draw] = owner
    return draws
