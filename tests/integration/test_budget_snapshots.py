"""Ledger snapshots: a restart reads the latest snapshot plus the LEDGER entries after it and rebuilds the
same ledger, even once the entries the snapshot covers are gone from LEDGER (aged out)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from actors.budget_guard import journal, snapstore
from actors.budget_guard.actor import BudgetGuard
from policy.money import to_nanos
from tests.support.actors import Actors
from tests.support.budget import failure, publish_failure, publish_result, release, reserve, result, settled, summary
from tests.support.wait import eventually

StartGuard = Callable[[], Awaitable[BudgetGuard]]
BUDGETS: dict[str, Any] = {
    "limits": [{"scope": "tier", "name": "premium", "period": "daily", "hard_usd": 2.0, "soft": [0.1]}],
}
COMPARED = ("charges", "spent_nanos", "digest", "open_reservations", "held_nanos", "by_tier", "limits", "open_leases")


@pytest.fixture
def start_guard(actors: Actors) -> StartGuard:
    async def start() -> BudgetGuard:
        return await actors.start(BudgetGuard(actors.config(overrides={"budgets": BUDGETS})))

    return start


async def spend(nc: NATS, tag: str) -> None:
    """Holds, charges, a failed attempt, a release and a lease drawn from: every kind of entry."""
    for i in range(4):
        assert (await reserve(nc, f"{tag}{i}", 0.10)).granted
    await publish_result(nc, result(f"{tag}0", 0.05))
    await publish_failure(nc, failure(f"{tag}1", 0.01))
    await publish_result(nc, result(f"{tag}1", 0.02, attempt=1))
    r3 = await reserve(nc, f"{tag}3", 0.10)
    assert r3.reservation_id and (await release(nc, r3.reservation_id)).released
    assert (await reserve(nc, f"lease-{tag}", 0.30, lease=True)).granted
    await publish_result(nc, result(f"{tag}l", 0.01, drawn=(f"lease-{tag}", to_nanos(0.02))))
    await eventually(lambda: settled(nc))


async def test_a_restart_reads_the_snapshot_and_only_the_entries_after_it(start_guard: StartGuard, nc: NATS) -> None:
    """Snapshot, more spending, LEDGER trimmed below the snapshot, restart: the same ledger, a short replay."""
    first = await start_guard()
    await spend(nc, "a")
    manifest = await first.snapshot_now()
    assert manifest is not None and manifest.covers_seq > 0
    assert await first.snapshot_now() is None  # nothing new: no second snapshot
    await spend(nc, "b")
    before = await summary(nc)
    await first.stop(grace=1)
    info = await nc.jetstream().stream_info(journal.STREAM)
    tail = info.state.last_seq - manifest.covers_seq
    # What LEDGER's retention would do to old entries: gone below the snapshot's sequence.
    purge = json.dumps({"seq": manifest.covers_seq + 1}).encode()
    await nc.request(f"$JS.API.STREAM.PURGE.{journal.STREAM}", purge, timeout=5)
    assert (await nc.jetstream().stream_info(journal.STREAM)).state.first_seq == manifest.covers_seq + 1

    await start_guard()
    after = await summary(nc)
    for field in COMPARED:
        assert getattr(after, field) == getattr(before, field), field
    assert after.entries_replayed == tail > 0
    assert before.charges == 8 and before.open_leases == 2


async def test_two_snapshots_are_kept_and_older_ones_purged(start_guard: StartGuard, nc: NATS) -> None:
    guard = await start_guard()
    manifests = []
    for tag in ("c", "d", "e"):
        await spend(nc, tag)
        m = await guard.snapshot_now()
        assert m is not None
        manifests.append(m)
    info = await nc.jetstream().stream_info(snapstore.STREAM)
    assert info.state.first_seq == manifests[1].first_part_seq  # the first one purged
    last = await snapstore.latest_manifest(nc)
    assert last is not None
    latest = await snapstore.read(nc, last)
    assert latest is not None and latest.manifest == manifests[2]
