"""LEDGER within its bytes: from half full on, the guard stores a snapshot and purges the entries two
snapshots cover (actors/budget_guard/compaction.py). Budgets stay exact, a restart rebuilds the same
ledger (from the latest snapshot, or the one before it if the latest is unusable), paid requests go on
being granted where a full LEDGER used to refuse them, and `orchestra cost report --verify` compares from
LEDGER's first entry on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from actors.budget_guard import compaction, journal, snapstore
from actors.budget_guard.actor import BudgetGuard
from actors.budget_guard.foldjob import FoldFailed, FoldJob, fold_in_child
from actors.budget_guard.messages import SpaceTick
from schemas.events import LedgerCompacted
from tests.integration.test_budget_guard import orchestra
from tests.integration.test_budget_snapshots import COMPARED, spend
from tests.support.actors import Actors
from tests.support.budget import publish_result, replayed_charges, reserve, result, settled, summary
from tests.support.cloud import free_port
from tests.support.events import Recorder
from tests.support.wait import eventually

StartGuard = Callable[[], Awaitable[BudgetGuard]]
BUDGETS: dict[str, Any] = {
    "limits": [{"scope": "tier", "name": "premium", "period": "daily", "hard_usd": 1000.0, "soft": [0.99]}],
}
# LEDGER's share of this is 15 %, but a stream has at least 1 MiB: half of it is ~1,100 charges.
STREAMS = {"max_bytes": "1MB"}


def start_guard_with(actors: Actors) -> StartGuard:
    async def start() -> BudgetGuard:
        cfg = actors.config(overrides={"budgets": BUDGETS, "bus": {"streams": STREAMS}})
        return await actors.start(BudgetGuard(cfg))

    return start


async def ledger_space(nc: NATS) -> compaction.Space:
    space = await compaction.space(nc)
    assert space is not None
    return space


async def fill(nc: NATS, tag: str) -> compaction.Space:
    """Every kind of entry once, then results (a charge each) until LEDGER is due for compaction."""
    await spend(nc, tag)
    for batch in range(100):
        ids = [f"{tag}-{batch}-{i}" for i in range(100)]
        await asyncio.gather(*(publish_result(nc, result(rid, 0.0001)) for rid in ids))
        await eventually(lambda: settled(nc), timeout=30)
        space = await compaction.space(nc)
        assert space is not None and space.limit > 0
        if compaction.due(space):
            return space
    raise AssertionError("LEDGER never reached half its bytes")


async def test_a_half_full_ledger_is_compacted_and_a_restart_rebuilds_the_same_ledger(actors: Actors, nc: NATS) -> None:
    start = start_guard_with(actors)
    events = await Recorder.listen(nc, "ledger.>")
    guard = await start()
    await fill(nc, "a")
    await guard.handle(SpaceTick())  # the first snapshot: nothing may go yet (no snapshot before it)
    assert len(await snapstore.manifests(nc)) == 1 and (await ledger_space(nc)).first_seq == 1
    await spend(nc, "b")
    before = await compaction.space(nc)
    await guard.handle(SpaceTick())
    kept = await snapstore.manifests(nc)
    after = await compaction.space(nc)
    assert before is not None and after is not None and len(kept) == 2
    assert after.first_seq == kept[0].covers_seq + 1 > 1  # what the older snapshot covers is gone
    assert after.bytes < before.bytes and after.last_seq == before.last_seq
    (event,) = await eventually(lambda: events.of(LedgerCompacted))
    assert event.kept_from == after.first_seq and event.covers_seq == kept[1].covers_seq
    assert event.bytes_before == before.bytes and event.limit_bytes == before.limit

    await spend(nc, "c")
    live = await summary(nc)
    await guard.stop(grace=1)
    await start()
    rebuilt = await summary(nc)
    for field in COMPARED:
        assert getattr(rebuilt, field) == getattr(live, field), field
    assert rebuilt.entries_replayed == (await ledger_space(nc)).last_seq - kept[1].covers_seq


async def test_when_the_latest_snapshot_is_unusable_the_one_before_and_its_tail_rebuild_the_ledger(
    actors: Actors, nc: NATS
) -> None:
    start = start_guard_with(actors)
    guard = await start()
    await fill(nc, "a")
    await guard.handle(SpaceTick())
    await spend(nc, "b")
    await guard.handle(SpaceTick())
    older, latest = await snapstore.manifests(nc)
    assert (await ledger_space(nc)).first_seq == older.covers_seq + 1
    live = await summary(nc)
    await guard.stop(grace=1)
    gone = json.dumps({"seq": latest.first_part_seq}).encode()  # one part of the latest snapshot lost
    reply = await nc.request(f"$JS.API.STREAM.MSG.DELETE.{snapstore.STREAM}", gone, timeout=5)
    assert json.loads(reply.data).get("success"), reply.data
    await start()
    rebuilt = await summary(nc)
    for field in COMPARED:
        assert getattr(rebuilt, field) == getattr(live, field), field
    assert rebuilt.entries_replayed == (await ledger_space(nc)).last_seq - older.covers_seq  # from the older one


async def test_a_compacted_ledger_keeps_granting_and_the_cost_report_compares_from_its_first_entry(
    actors: Actors, nc: NATS, tmp_path: Path
) -> None:
    """Without compaction this LEDGER would be full after ~160 entries and refuse every paid hold."""
    start = start_guard_with(actors)
    guard = await start()
    for round_ in range(4):  # four times half the stream: twice what it holds
        await fill(nc, f"r{round_}-")
        await guard.handle(SpaceTick())
        await spend(nc, f"s{round_}-")
        await guard.handle(SpaceTick())
    space = await compaction.space(nc)
    assert space is not None and space.last_seq > 2 * space.limit // 500 and space.bytes < space.limit
    assert (await reserve(nc, "still-granted", 0.10)).granted
    await publish_result(nc, result("still-granted", 0.05))
    await eventually(lambda: settled(nc))
    assert await journal.held_from(nc) is not None  # LEDGER no longer holds its first entries
    out = await asyncio.to_thread(orchestra, tmp_path / "profile", "cost", "report", "--since", "1h", "--verify")
    # Every charge is in the report (replayed from RESULTS); the check against the ledger starts where
    # LEDGER does, so the purged charges are no difference (before: exit 1, "results not charged yet").
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ledger agrees" in out.stdout and "compared from" in out.stdout, out.stdout
    total = next(line for line in out.stdout.splitlines() if line.startswith("total"))
    charged = await replayed_charges(nc)
    assert len(charged) > space.last_seq // 4 and total.split()[-1] == f"${sum(charged.values()) / 1e9:.6f}", total


async def test_a_fold_that_fails_or_outlives_its_time_is_an_error_and_its_child_is_gone(
    actors: Actors, nc: NATS
) -> None:
    """The snapshot fold runs in a child process (foldjob.py): one that cannot connect is a FoldFailed
    naming why; one that outlives the timeout is killed and the timeout raised."""
    cfg = actors.config(overrides={"budgets": BUDGETS})
    unknown = FoldJob(cfg.bus, cfg.budgets, cfg.data_dir, role="nobody", connect_wait=1)  # no credentials
    with pytest.raises(FoldFailed, match="exited 1"):
        await fold_in_child(unknown, timeout=60)
    closed = f"nats://127.0.0.1:{free_port()}"  # an ephemeral port, released: nothing listens there
    nowhere = FoldJob(msgspec.structs.replace(cfg.bus, servers=[closed]), cfg.budgets, cfg.data_dir)  # retries 30 s
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await fold_in_child(nowhere, timeout=2)
    assert time.monotonic() - started < 10
    assert await snapstore.manifests(nc) == []  # nothing was written
