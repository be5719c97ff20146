"""`orchestra status` shows KV state for people: epoch seconds as UTC times, 0 as never."""

from __future__ import annotations

from bus.cli.status import _field


def test_times_are_shown_as_utc_and_zero_as_never() -> None:
    assert _field("changed_at", 1796523537.41) == "2026-12-06T02:18:57+00:00"
    assert _field("cooldown_until", 0.0) == "-"
    assert _field("since", 1796523536) == "2026-12-06T02:18:56+00:00"


def test_other_values_are_kept_and_floats_rounded() -> None:
    assert _field("p50_latency_ms", 12.3456) == 12.3
    assert _field("consecutive_failures", 3) == 3
    assert _field("enabled", True) is True
    assert _field("reason", "initial") == "initial"
