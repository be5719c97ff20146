"""The router's outcome feed (actors/router/heard.py): an outcome nobody waits on is handled just after the
moment it was stored, with the others of that moment and in their order; one a fan-out parent waits on,
at once; what is held is handled at stop; one outcome's failure does not lose the next."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from actors.router.heard import OutcomeFeed


def msg(subject: str) -> Msg:
    return Msg(_client=None, subject=subject, data=b"{}")  # type: ignore[arg-type]


class Handled:
    def __init__(self, failing: str = "") -> None:
        self.subjects: list[str] = []
        self.failing = failing
        self.got = asyncio.Event()

    async def __call__(self, m: Msg) -> None:
        self.subjects.append(m.subject)
        self.got.set()
        if m.subject == self.failing:
            raise RuntimeError("bookkeeping failed")


async def test_an_outcome_nobody_waits_on_is_handled_after_the_delay_with_the_others_in_order() -> None:
    handled = Handled()
    feed = OutcomeFeed(lambda m: m.subject.startswith("urgent"), handled, delay=0.05)
    for s in ("a", "b", "urgent.c", "d"):
        await feed.heard(msg(s))
    assert handled.subjects == ["urgent.c"]  # at once; the others are held
    handled.got.clear()
    await asyncio.wait_for(handled.got.wait(), 5)
    await feed.drain()
    assert handled.subjects == ["urgent.c", "a", "b", "d"]


async def test_drain_handles_what_is_held_and_waits_for_it() -> None:
    handled = Handled()
    feed = OutcomeFeed(lambda m: False, handled, delay=3600)  # would never come due by itself
    await feed.heard(msg("a"))
    await feed.heard(msg("b"))
    assert handled.subjects == []
    await feed.drain()
    assert handled.subjects == ["a", "b"]


async def test_one_outcome_failing_does_not_lose_the_next(caplog: pytest.LogCaptureFixture) -> None:
    handled = Handled(failing="a")
    feed = OutcomeFeed(lambda m: False, handled, delay=3600)
    await feed.heard(msg("a"))
    await feed.heard(msg("b"))
    await feed.drain()
    assert handled.subjects == ["a", "b"]
    assert "handling the outcome on a failed" in caplog.text
