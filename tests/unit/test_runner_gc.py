"""The actors' collector settings (bus.runner.tune_gc): set once started, overridable, off with 0."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bus.runner import GC_THRESHOLD, tune_gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_started_actors_collect_young_objects_less_often_and_skip_the_frozen_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORCHESTRA_GC_THRESHOLD", raising=False)
    tune_gc()
    assert gc.get_threshold() == (GC_THRESHOLD, 20, 10)
    assert gc.get_freeze_count() > 0


def test_the_threshold_can_be_set_or_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.set_threshold(700, 10, 10)
    monkeypatch.setenv("ORCHESTRA_GC_THRESHOLD", "0")
    tune_gc()
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
    monkeypatch.setenv("ORCHESTRA_GC_THRESHOLD", "5000")
    tune_gc()
    assert gc.get_threshold() == (5000, 20, 10)


def test_a_bad_value_is_named_and_the_default_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ORCHESTRA_GC_THRESHOLD", "lots")
    tune_gc()
    assert gc.get_threshold()[0] == GC_THRESHOLD
    assert "ORCHESTRA_GC_THRESHOLD='lots'" in caplog.text
