"""The overflow switches: the rotator's pure fold of SetOverflow commands (the one writer of orch_overflow)
and the readers' view of the bucket (a routing snapshot's dict, rebuilt only when the bucket changes)."""

from __future__ import annotations

from typing import Any

from actors.rotator.overflow import switch
from bus.overflow import ALL, Overflow, key_of
from schemas.commands import SetOverflow
from schemas.state import OverflowState


def test_switching_on_keeps_since_and_every_sender_and_switching_off_removes_the_entry() -> None:
    """A second sender switching the same model on is added to enabled_by (scaling still owns its switch);
    the tier and the last sender follow the newest command; off leaves no entry."""
    first = switch(None, SetOverflow(model="ta", tier="together", by="rotator", at=10.0), now=99.0)
    assert first == OverflowState(model="ta", tier="together", by="rotator", enabled_by=["rotator"], since=10.0)
    again = switch(first, SetOverflow(model="ta", tier="premium", by="diversity_monitor", at=20.0), now=99.0)
    assert again is not None and (again.tier, again.by, again.since) == ("premium", "diversity_monitor", 10.0)
    assert again.enabled_by == ["rotator", "diversity_monitor"]
    third = switch(again, SetOverflow(model="ta", tier="premium", by="rotator"), now=99.0)
    assert third is not None and third.enabled_by == ["rotator", "diversity_monitor"]
    assert switch(again, SetOverflow(model="ta", enabled=False, by="someone"), now=99.0) is None


def test_an_overflow_of_every_local_model_has_its_own_key() -> None:
    assert key_of(None) == ALL == "*" and key_of("ta") == "ta"


class _NoBus:
    """Overflow only keeps the JetStream context for its watch, which this test does not run."""


def test_the_readers_dict_is_rebuilt_only_when_the_bucket_changed() -> None:
    """Snapshots share one dict until the watch reports a change (no copy per request)."""
    o = Overflow(_NoBus())  # type: ignore[arg-type]
    assert o.tiers() == {}
    data: dict[str, Any] = {"ta": OverflowState(model="ta", tier="together")}
    o.view.data = data  # what the watch does when it (re)starts: a whole new dict
    first = o.tiers()
    assert first == {"ta": "together"} and o.tiers() is first
    data["*"] = OverflowState(model=None, tier="premium")  # a change: in place, then the callback
    o.view.on_change("*", data["*"])  # type: ignore[misc]
    assert o.tiers() == {"ta": "together", "*": "premium"} and first == {"ta": "together"}
    del data["ta"]
    o.view.on_change("ta", None)  # type: ignore[misc]
    assert o.tiers() == {"*": "premium"} and o.switches() == {"*": data["*"]}
