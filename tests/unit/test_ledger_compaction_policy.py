"""When the guard compacts LEDGER and how much it keeps (actors/budget_guard/compaction.py, pure parts),
and how the cost report says it compared from LEDGER's first entry on."""

from __future__ import annotations

from datetime import UTC, datetime

from actors.budget_guard import report
from actors.budget_guard.compaction import COMPACT_AT, Space, due, keep_from
from actors.budget_guard.snapstore import Manifest


def manifest(covers: int) -> Manifest:
    return Manifest(id=f"s{covers}", covers_seq=covers, first_part_seq=1, parts=1, bytes=1, entries=covers, at=0.0)


def test_due_from_half_of_the_limit_and_never_without_one() -> None:
    limit = 1 << 20
    assert not due(Space(int(COMPACT_AT * limit) - 1, limit, 1, 10))
    assert due(Space(int(COMPACT_AT * limit), limit, 1, 10))
    assert due(Space(limit, limit, 1, 10))
    assert not due(Space(10 * limit, 0, 1, 10))  # no byte limit: age alone trims LEDGER


def test_entries_go_only_up_to_what_the_older_of_the_last_two_snapshots_covers() -> None:
    assert keep_from([]) is None
    assert keep_from([manifest(100)]) is None  # one snapshot: if it is unusable, LEDGER alone rebuilds
    assert keep_from([manifest(100), manifest(250)]) == 101
    assert keep_from([manifest(40), manifest(100), manifest(250)]) == 101  # a third, not yet purged
    assert keep_from([manifest(250), manifest(100)]) == 101  # whatever their order


def test_the_comparison_says_where_it_started_when_ledger_holds_nothing_older() -> None:
    plain = report.compare({"a": 5}, {"a": 5})
    assert plain.equal and "compared from" not in plain.describe()
    since = datetime(2026, 12, 7, 6, 0, tzinfo=UTC).timestamp()
    later = report.compare({"a": 5}, {"a": 5}, since=since)
    assert later.describe() == (
        "ledger agrees: 1 charges, $0.000000005 (compared from 2026-12-07T06:00:00+00:00 on: LEDGER's older "
        "entries are compacted into its snapshots)"
    )
    differ = report.compare({"a": 5, "b": 7}, {"a": 5}, since=since)
    assert not differ.equal and differ.describe().startswith("ledger differs") and "compared from" in differ.describe()
