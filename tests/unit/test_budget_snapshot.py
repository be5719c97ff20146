"""A ledger snapshot's bytes and back: the same ledger, lease draws included, also from the format before."""

from __future__ import annotations

import zlib

import msgspec
import pytest

from actors.budget_guard import snapshot
from policy.ledger import Ledger
from schemas.budget import Charged
from tests.unit.test_budget_ledger import T0, budgets, drawn, lease_req, lease_snapshot, premium_daily


def ledger_with_draws() -> Ledger:
    """A $1 lease with two settled draws, one unsettled draw's second outcome refused."""
    ledger = Ledger(budgets(premium_daily(2.0)))
    assert ledger.try_reserve(lease_req("L1", 1.0), reservation_id="L1", now=T0).granted
    for c in (drawn("a", 0.05, "L1", 0.10), drawn("b", 0.01, "L1", 0.20, failed=True)):
        assert ledger.apply(ledger.settles(c)) is True
    return ledger


def second_outcome_of_b() -> Charged:
    """Attempt b's result after its failure was charged against the lease: the draw is owned already."""
    c = drawn("b", 0.02, "L1", 0.20)
    return msgspec.structs.replace(c, key="b-result")


def test_a_snapshot_restores_the_same_ledger_and_its_draws_keep_working() -> None:
    live = ledger_with_draws()
    restored = snapshot.restore(live.cfg, snapshot.export(live))
    assert lease_snapshot(restored) == lease_snapshot(live)
    assert len(restored.draws["L1"]) == 2
    for ledger in (live, restored):  # the restored draws still refuse a second outcome of one attempt
        settled = ledger.settles(second_outcome_of_b())
        assert settled.reservation_id is None and settled.reserved_nanos == 0


def test_a_format_2_snapshot_with_draws_as_strings_is_read() -> None:
    """The snapshot written before draws were hashed: [lease, request id, attempt, charge key]."""
    live = ledger_with_draws()
    doc = msgspec.msgpack.decode(zlib.decompress(snapshot.export(live)))
    fields = list(snapshot.LedgerState.__struct_fields__)
    doc[fields.index("format")] = 2
    doc[fields.index("draws")] = [["L1", "a", 0, "a"], ["L1", "b", 0, "b:0:failed"]]
    restored = snapshot.restore(live.cfg, zlib.compress(msgspec.msgpack.encode(doc)))
    assert lease_snapshot(restored) == lease_snapshot(live)
    settled = restored.settles(second_outcome_of_b())
    assert settled.reservation_id is None


@pytest.mark.parametrize(
    "draws",
    [[["L1", "not-a-hash", 5]], [["L1", 1]], [[7, 1, 2]]],
    ids=["a string for a hash", "a short row", "a number for a lease"],
)
def test_a_snapshot_with_unreadable_draws_is_refused_as_a_snapshot_error(draws: list[list[object]]) -> None:
    live = ledger_with_draws()
    doc = msgspec.msgpack.decode(zlib.decompress(snapshot.export(live)))
    doc[list(snapshot.LedgerState.__struct_fields__).index("draws")] = draws
    with pytest.raises(snapshot.SnapshotError, match="draws"):
        snapshot.restore(live.cfg, zlib.compress(msgspec.msgpack.encode(doc)))
