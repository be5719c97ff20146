"""The next ledger snapshot folded and stored by a child process, not in the guard's own.

    python -m actors.budget_guard.foldjob < job.json      -> the manifest as JSON on stdout (or null)

The job (``FoldJob``: the bus settings, the budgets, the data directory) comes on stdin; the child connects
as the budget_guard, folds the latest snapshot and the LEDGER entries after it and stores the result as the
next snapshot (``rebuild.snapshot_now``), prints the manifest and exits. Why a process: a fold of ~160,000
entries (a compaction, or the hourly snapshot of a busy lab) left the guard's RSS ~7-10 MB higher for good,
memory the allocator kept after the fold (Python's own heap did not grow: docs/benchmarks.md, "LEDGER
compaction"); a child gives it all back when it exits, and its CPU is not the guard's event loop's.
The guard runs one at a time (``compaction.Snapshots``) and kills it if it outlives ``timeout``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec

from actors.budget_guard import rebuild, snapstore
from bus.connect import connect
from schemas.config.bus import BusCfg
from schemas.config.ops import BudgetsCfg
from schemas.config.units import dec_hook, enc_hook

MODULE = "actors.budget_guard.foldjob"


class FoldJob(msgspec.Struct, frozen=True):
    bus: BusCfg
    budgets: BudgetsCfg
    data_dir: str
    role: str = "budget_guard"  # whose credentials the child connects with (the guard's own)
    connect_wait: float = 30.0  # the child gives up on the bus after this long


class FoldFailed(Exception):
    """The child exited without a manifest (its last lines of stderr say why)."""


async def fold_in_child(job: FoldJob, *, timeout: float) -> snapstore.Manifest | None:
    """Run the job in a child process; its manifest, or None when there was nothing new to fold."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", MODULE,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(msgspec.json.encode(job, enc_hook=enc_hook))
    except BaseException:  # a timeout, or the guard stopping: the child goes with it
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        raise FoldFailed(f"the snapshot fold exited {proc.returncode}: {tail or 'no output'}")
    return msgspec.json.decode(lines[-1], type=snapstore.Manifest | None)


async def _main() -> None:
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=FoldJob, dec_hook=dec_hook)
    nc = await connect(job.bus, name=f"{job.role}:fold", role=job.role, data_dir=job.data_dir, wait=job.connect_wait)
    try:
        manifest = await rebuild.snapshot_now(nc, job.budgets, now=time.time())
    finally:
        await nc.close()
    sys.stdout.write(msgspec.json.encode(manifest).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(_main())
