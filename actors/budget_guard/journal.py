"""The LEDGER stream: where ledger entries are stored and how they are read back.

    orch.ledger.reserved | released | charged | marked      one subject per entry kind
    Nats-Msg-Id  res:<reservation id> | rel:<reservation id> | chg:<charge key> | mark:<key>

The Msg-Ids make a retried append store once. The stream keeps ``budgets.ledger_history`` (more
than a month, for monthly budgets), longer than the other streams.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from bus import subjects
from bus.replay import read_batches
from bus.subjects import StreamSpec
from schemas.budget import LEDGER_ENTRY, Charged, LedgerEntry, Marked, Released, Reserved
from schemas.config.ops import BudgetsCfg
from schemas.errors import SchemaError

STREAM = subjects.LEDGER_STREAM
# Entries a pull brings. A guard folds LEDGER while it serves (each snapshot): 10,000 messages in flight
# took its RSS up by ~25 MB for good (160,000 entries: peak +26 MB, +15 MB kept); 1,000: +7 / +5 MB, as fast.
READ_BATCH = 1_000


def ledger_stream(cfg: BudgetsCfg) -> StreamSpec:
    """Kept ``budgets.ledger_history``; full, it refuses new entries (the guard then denies reservations)
    rather than drop old ones: money is never trimmed from under the guard. Entries past the history
    live on in the ledger snapshots (snapstore.py)."""
    return StreamSpec(
        STREAM,
        [subjects.LEDGER_ALL],
        "budget_guard's spend ledger: reservations, releases, charges, notifications (one writer)",
        max_age=float(cfg.ledger_history),
        share=subjects.LEDGER_SHARE,
        discard="new",
    )


def subject_of(entry: LedgerEntry) -> str:
    return subjects.ledger(str(type(entry).__struct_config__.tag))


def msg_id_of(entry: LedgerEntry) -> str:
    match entry:
        case Reserved():
            return f"res:{entry.reservation_id}"
        case Released():
            return f"rel:{entry.reservation_id}"
        case Charged():
            return f"chg:{entry.key}"
        case Marked():
            return f"mark:{entry.key}"
    raise TypeError(f"not a ledger entry: {type(entry).__name__}")  # pragma: no cover


@dataclass(frozen=True)
class Rejected:
    """A stored message that is not a ledger entry (written by whoever could write LEDGER): skipped."""

    subject: str
    seq: int
    data: bytes
    reason: str


@dataclass
class Progress:
    """How far a read got: the stream sequence of the last message read (entry or not), and the
    sequences the read wanted but the stream no longer held (aged out before a snapshot covered them)."""

    last_seq: int = 0
    missing: int = 0


async def read_entries(
    nc: NATS,
    rejected: list[Rejected] | None = None,
    *,
    after_seq: int = 0,
    progress: Progress | None = None,
) -> AsyncIterator[LedgerEntry]:
    """Every stored entry after stream sequence ``after_seq``, in order (nothing if the stream does not
    exist yet), read by bus/replay.py's one stream reader. A message that does not decode as an entry
    (or has a negative amount) is skipped and appended to ``rejected``: one bad entry never stops a
    rebuild."""
    try:
        info = await nc.jetstream().stream_info(STREAM)
    except NotFoundError:
        return
    if progress is not None:
        progress.last_seq = max(progress.last_seq, after_seq)
        if info.state.messages and info.state.first_seq > after_seq + 1:
            progress.missing = info.state.first_seq - after_seq - 1
    if not info.state.messages or info.state.last_seq <= after_seq:
        return
    batches_of = read_batches(nc, STREAM, subjects.LEDGER_ALL, after_seq=after_seq, batch=READ_BATCH)
    async with contextlib.aclosing(batches_of) as batches:
        async for chunk in batches:
            if progress is not None and chunk and chunk[-1].reply:
                progress.last_seq = chunk[-1].metadata.sequence.stream
            for msg in chunk:
                entry = _decode(msg, rejected)
                if entry is not None:
                    yield entry


async def held_from(nc: NATS) -> float | None:
    """When LEDGER's first stored entry was stored, if older ones are gone (compacted into the snapshots
    or aged out); None while it holds everything it was given (or nothing)."""
    try:
        info = await nc.jetstream().stream_info(STREAM)
        if not info.state.messages or info.state.first_seq <= 1:
            return None
        first = await nc.jetstream().get_msg(STREAM, info.state.first_seq)
    except NotFoundError:
        return None
    return first.time.timestamp() if first.time else None


def _decode(msg: Msg, rejected: list[Rejected] | None) -> LedgerEntry | None:
    try:
        return LEDGER_ENTRY.decode(msg.data)
    except SchemaError as exc:
        if rejected is not None:
            seq = msg.metadata.sequence.stream if msg.reply else 0
            rejected.append(Rejected(msg.subject, seq, msg.data, str(exc)))
        return None
