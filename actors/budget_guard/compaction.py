"""LEDGER kept within its bytes: the entries two snapshots cover are purged before the stream fills.

LEDGER keeps ``budgets.ledger_history`` (40 days) within its share of ``bus.streams.max_bytes`` and, full,
refuses new entries (discard ``new``: money is never trimmed from under the guard; the guard then denies
every paid reservation as ``ledger_unavailable``). At ~470 bytes an entry, 40 days of one paid request a
second is ~1.6 GB, past the default share (15 % of 8 GiB); at 1,000 a second the share is full in ~45
minutes. So, every ``EVERY`` seconds, the guard looks at LEDGER's bytes; from ``COMPACT_AT`` of its limit
on it stores a snapshot (folded by a child process, foldjob.py) and purges the entries the snapshot
*before* it covers: a restart reads the latest snapshot and the entries after it, and if that snapshot
turns out unusable, the one before and the entries after that (rebuild.py), so both stay complete. Budgets
stay exact (the snapshots hold every period's sums); what is lost is depth of audit: ``orchestra cost
report`` compares with the ledger from a minute after its first stored entry and says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from actors.budget_guard import journal, snapstore
from actors.budget_guard.foldjob import FoldJob, fold_in_child
from schemas.events import Event, LedgerCompacted

Emit = Callable[[Event], Awaitable[None]]

EVERY = 30.0  # seconds between looks at LEDGER's bytes
COMPACT_AT = 0.5  # of LEDGER's byte limit: room left for the entries written while a snapshot is stored
FOLD_TIMEOUT = 900.0  # a child folding longer is killed (1.6 M entries folded and stored in ~26 s here)


@dataclass(frozen=True)
class Space:
    """LEDGER's bytes and limit (0: none), and its first and last sequence."""

    bytes: int
    limit: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class Compacted:
    before: Space
    after: Space
    covers_seq: int  # the latest snapshot's
    kept_from: int  # the first LEDGER sequence kept


# --- policy (pure) ---------------------------------------------------------------------------------
def due(space: Space) -> bool:
    """Whether LEDGER is full enough to compact (never when it has no byte limit)."""
    return space.limit > 0 and space.bytes >= COMPACT_AT * space.limit


def keep_from(kept: list[snapstore.Manifest]) -> int | None:
    """The first LEDGER sequence to keep: the one after what the older of the last two snapshots covers
    (so either of them rebuilds the ledger); None with fewer than two snapshots (nothing may go)."""
    if len(kept) < 2:
        return None
    return min(m.covers_seq for m in kept[-2:]) + 1


# --- I/O -------------------------------------------------------------------------------------------
async def space(nc: NATS) -> Space | None:
    try:
        info = await nc.jetstream().stream_info(journal.STREAM)
    except NotFoundError:
        return None
    limit = info.config.max_bytes or 0
    return Space(info.state.bytes, max(limit, 0), info.state.first_seq, info.state.last_seq)


class Snapshots:
    """The guard's snapshot writing, one at a time (a turn of ``every`` and a compaction never interleave
    their parts): every ``budgets.snapshot_every`` and when LEDGER is due for compaction. Each fold runs
    in a child process (foldjob.py), so the guard's memory does not keep what the fold took."""

    def __init__(self, job: FoldJob, log: logging.Logger, emit: Emit, *, timeout: float = FOLD_TIMEOUT) -> None:
        self.job, self.log, self.emit, self.timeout = job, log, emit, timeout
        self.lock = asyncio.Lock()

    async def write(self, nc: NATS) -> snapstore.Manifest | None:
        """The next snapshot, if there is anything new (rebuild.snapshot_now, in a child process)."""
        async with self.lock:
            return await self._write(nc)

    async def _write(self, nc: NATS) -> snapstore.Manifest | None:
        started = time.monotonic()
        manifest = await fold_in_child(self.job, timeout=self.timeout)
        if manifest is not None:
            self.log.info(
                "ledger snapshot up to LEDGER seq %d: %d bytes in %d parts (%.0f ms)",
                manifest.covers_seq, manifest.bytes, manifest.parts, (time.monotonic() - started) * 1000,
            )  # fmt: skip
        return manifest

    async def keep_space(self, nc: NATS) -> Compacted | None:
        """If LEDGER is due: a snapshot now, then the entries the previous snapshot covers purged; said in
        the log and as an event. Returns what was done (None: not due, or nothing could go yet)."""
        async with self.lock:
            before = await space(nc)
            if before is None or not due(before):
                return None
            await self._write(nc)
            kept = await snapstore.manifests(nc)
            first = keep_from(kept)
            if first is None or first <= before.first_seq:
                return None
            purge = json.dumps({"seq": first}).encode()  # every entry below ``first`` goes
            reply = json.loads((await nc.request(f"$JS.API.STREAM.PURGE.{journal.STREAM}", purge, timeout=10)).data)
            if not reply.get("success"):
                raise RuntimeError(f"LEDGER purge up to {first} refused: {reply.get('error')}")
            after = await space(nc)
        assert after is not None
        done = Compacted(before, after, kept[-1].covers_seq, first)
        self.log.warning(
            "LEDGER at %d of its %d bytes: compacted into snapshot @%d; entries before seq %d purged (%d bytes "
            "left); budgets stay exact, the ledger's audit now starts there",
            before.bytes, before.limit, done.covers_seq, first, after.bytes,
        )  # fmt: skip
        await self.emit(
            LedgerCompacted(
                covers_seq=done.covers_seq, kept_from=first, bytes_before=before.bytes, bytes_after=after.bytes,
                limit_bytes=before.limit,
            )
        )  # fmt: skip
        return done
