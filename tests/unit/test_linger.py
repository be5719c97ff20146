"""bus/linger.py: when an off-path consumer polls next, from what its last poll brought. Pure: plain numbers."""

from __future__ import annotations

from bus.linger import Poll


def test_the_first_poll_is_due_at_once() -> None:
    assert Poll(0.02).due_in(now=100.0) == 0.0


def test_a_poll_that_brought_messages_paces_the_next_by_the_linger() -> None:
    """Some messages, fewer than asked: the next poll after ``every`` seconds."""
    poll = Poll(0.02)
    poll.sent(100.0, 32)
    for _ in range(5):
        poll.received()
    assert abs(poll.due_in(now=100.005) - 0.015) < 1e-9
    assert poll.due_in(now=100.03) == 0.0


def test_a_full_poll_is_followed_at_once() -> None:
    """Every slot filled: more messages are waiting, so the next poll goes out now."""
    poll = Poll(0.02)
    poll.sent(100.0, 4)
    for _ in range(4):
        poll.received()
    assert poll.due_in(now=100.0) == 0.0


def test_empty_polls_back_off_to_the_idle_maximum_and_a_message_brings_the_pace_back() -> None:
    """An idle stack polls less and less often (doubling, capped), and at the linger again once busy."""
    poll = Poll(0.02, idle_max=0.1)
    now, waits = 100.0, []
    for _ in range(5):
        poll.sent(now, 8)
        wait = poll.due_in(now)
        assert poll.due_in(now) == wait  # asking again does not double it again
        waits.append(round(wait, 6))
        now += wait
    assert waits == [0.04, 0.08, 0.1, 0.1, 0.1]
    poll.sent(now, 8)
    poll.received()
    assert round(poll.due_in(now), 6) == 0.02
