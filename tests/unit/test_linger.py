"""bus/linger.py: items gathered, then handed out together (by the timer, or at once by flush); when an off-path
consumer polls next, from what its last poll brought (plain numbers)."""

from __future__ import annotations

import asyncio

from bus.linger import Linger, Poll


async def test_items_added_within_the_delay_are_released_together_by_the_timer() -> None:
    """Three items added in one go come out as one batch when the delay has passed."""
    released: list[list[int]] = []
    done = asyncio.Event()

    def release(items: list[int]) -> None:
        released.append(items)
        done.set()

    linger = Linger(0.01, release)
    for i in range(3):
        linger.add(i)
    assert released == []  # held until the timer fires
    await done.wait()
    assert released == [[0, 1, 2]]


async def test_flush_releases_at_once_and_the_next_item_starts_a_new_batch() -> None:
    """flush() hands out what is held; the cancelled timer never releases an empty batch."""
    released: list[list[str]] = []
    done = asyncio.Event()

    def release(items: list[str]) -> None:
        released.append(items)
        if len(released) == 2:
            done.set()

    linger: Linger[str] = Linger(0.01, release)
    linger.add("a")
    linger.flush()
    linger.flush()  # nothing held: nothing released
    assert released == [["a"]]
    linger.add("b")
    await done.wait()
    assert released == [["a"], ["b"]]


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
