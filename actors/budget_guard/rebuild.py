"""The ledger rebuilt from storage: the latest snapshot plus the LEDGER entries after it, a pure fold
either way. The same fold writes the next snapshot (``snapshot_now``), so a snapshot never holds the
live ledger's claims and holds that are not stored yet.

If LEDGER no longer holds entries between a snapshot and its tail (they aged out before any snapshot
covered them: the guard was down longer than ``budgets.ledger_history``), the rebuild says how many
(``Rebuilt.missing``); the guard logs it as an error rather than serve a smaller spend without a word.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from actors.budget_guard import journal, snapshot, snapstore
from policy.ledger import Ledger
from schemas.config.ops import BudgetsCfg
from schemas.events import DeadLettered

log = logging.getLogger(__name__)


@dataclass
class Rebuilt:
    ledger: Ledger
    last_seq: int  # LEDGER sequence the fold covers
    tail: int  # entries applied after the snapshot
    snapshot: snapstore.Manifest | None
    missing: int  # LEDGER sequences wanted but gone
    restore_ms: float = 0.0
    tail_ms: float = 0.0


async def fold(
    nc: NATS,
    cfg: BudgetsCfg,
    *,
    rejected: list[journal.Rejected] | None = None,
    use_snapshot: bool = True,
) -> Rebuilt:
    started = time.monotonic()
    snap: snapstore.Snapshot | None = None
    ledger = Ledger(cfg)
    after = 0
    kept = await snapstore.manifests(nc) if use_snapshot else []
    for manifest in reversed(kept):  # the latest; if it is unusable, the one before it
        try:
            snap = await snapstore.read(nc, manifest)
            ledger = snapshot.restore(cfg, snap.data)
            after = manifest.covers_seq
            break
        except (snapstore.SnapshotMissing, snapshot.SnapshotError) as exc:
            older = "the snapshot before it" if manifest != kept[0] else "LEDGER alone"
            log.warning("ledger snapshot %s unusable (%s): rebuilding from %s", manifest.id, exc, older)
            snap = None
    restored = time.monotonic()
    progress = journal.Progress()
    tail = 0
    async for entry in journal.read_entries(nc, rejected, after_seq=after, progress=progress):
        ledger.apply(entry)
        tail += 1
    return Rebuilt(
        ledger=ledger,
        last_seq=progress.last_seq,
        tail=tail,
        snapshot=snap.manifest if snap else None,
        missing=progress.missing,
        restore_ms=(restored - started) * 1000,
        tail_ms=(time.monotonic() - restored) * 1000,
    )


async def snapshot_now(nc: NATS, cfg: BudgetsCfg, *, now: float) -> snapstore.Manifest | None:
    """Fold the latest snapshot and the entries after it; store the result as the next snapshot if there
    was anything new. Returns its manifest (None: nothing new)."""
    rebuilt = await fold(nc, cfg)
    if rebuilt.snapshot is not None and rebuilt.last_seq <= rebuilt.snapshot.covers_seq:
        return None
    if rebuilt.last_seq == 0:
        return None  # an empty ledger
    rebuilt.ledger.prune(now)  # old period sums go, as live
    data = snapshot.export(rebuilt.ledger)
    return await snapstore.write(nc, data, covers_seq=rebuilt.last_seq, entries=rebuilt.ledger.entries_applied)


@dataclass(frozen=True)
class DeadLetter:
    headers: dict[str, str]  # of its copy in orch.dlq.LEDGER
    event: DeadLettered


def dead_letter(bad: journal.Rejected) -> DeadLetter:
    """How a LEDGER message that is not an entry is kept aside (with the reason) and announced."""
    reason = f"not a ledger entry: {bad.reason}"[:1000]
    headers = {
        "Orch-Reason": reason,
        "Orch-Subject": bad.subject,
        "Orch-Stream": journal.STREAM,
        "Orch-Consumer": "budget_guard-rebuild",
        "Orch-Stream-Seq": str(bad.seq),
        "Nats-Msg-Id": f"dlq:{journal.STREAM}:{bad.seq}",
    }
    event = DeadLettered(
        stream=journal.STREAM, subject=bad.subject, consumer="budget_guard-rebuild", deliveries=1, reason=reason
    )
    return DeadLetter(headers, event)
