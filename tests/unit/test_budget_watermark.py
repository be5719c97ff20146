"""The RESULTS watermark with plain data: how far the guard has charged what is stored."""

from __future__ import annotations

from actors.budget_guard.watermark import ConsumerState, Watermark


def state(at: float, undelivered: int, unacked: int, ack_floor: int, last_seq: int = 0) -> ConsumerState:
    return ConsumerState(at=at, undelivered=undelivered, unacked=unacked, ack_floor=ack_floor, last_seq=last_seq)


def test_a_consumer_with_nothing_pending_has_charged_everything_stored_before_the_tick() -> None:
    mark = Watermark()
    assert mark.observe(state(100.0, 0, 0, ack_floor=42)) == 100.0


def test_behind_it_moves_to_a_tick_once_the_ack_floor_passes_the_last_sequence_seen_then() -> None:
    """A backlog (a guard that restarts, or a charge that could not be stored and comes again): the
    watermark stays until everything stored by a tick is acknowledged, then moves to that tick."""
    mark = Watermark()
    assert mark.observe(state(100.0, 500, 32, ack_floor=10, last_seq=542)) is None
    assert mark.observe(state(101.0, 200, 32, ack_floor=300, last_seq=560)) is None
    assert mark.observe(state(102.0, 0, 5, ack_floor=542, last_seq=565)) == 100.0
    assert mark.observe(state(103.0, 0, 1, ack_floor=564, last_seq=566)) == 101.0  # 102's 565 not yet
    assert mark.observe(state(104.0, 0, 0, ack_floor=566)) == 104.0


def test_an_unacknowledged_result_holds_the_watermark_back() -> None:
    """One result naked for a retry (its charge could not be stored) keeps the ack floor, and so the
    watermark, where it is, however long that takes."""
    mark = Watermark()
    for t in range(100, 160):
        assert mark.observe(state(float(t), 0, 1, ack_floor=41, last_seq=45)) is None
