"""bus/linger.py: items gathered, then handed out together (by the timer, or at once by flush)."""

from __future__ import annotations

import asyncio

from bus.linger import Linger


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
