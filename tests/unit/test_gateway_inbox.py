"""next_answer: the gateway's wait for the next answer of a request, with a timer instead of wait_for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.gateway.inbox import _Expired, next_answer
from actors.gateway.messages import ChunkSeen, ResultSeen


async def test_an_answer_already_queued_is_returned_at_once() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    queue.put_nowait(ResultSeen("r1", b"{}"))
    assert await next_answer(queue, 5.0) == ResultSeen("r1", b"{}")


async def test_an_answer_that_comes_later_ends_the_wait() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    asyncio.get_running_loop().call_soon(queue.put_nowait, ChunkSeen("r1", b"a"))
    assert await next_answer(queue, 5.0) == ChunkSeen("r1", b"a")


async def test_no_answer_in_time_is_a_timeout_and_leaves_no_timer() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    with pytest.raises(TimeoutError):
        await next_answer(queue, 0.01)
    assert queue.empty()  # its own marker was taken; nothing is left for a later wait


async def test_a_marker_of_an_earlier_wait_does_not_end_a_later_one() -> None:
    """A timer that fired just after its answer was queued leaves its marker behind: passed over."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    queue.put_nowait(_Expired())
    queue.put_nowait(ResultSeen("r1", b"{}"))
    assert await next_answer(queue, 5.0) == ResultSeen("r1", b"{}")
    queue.put_nowait(_Expired())
    asyncio.get_running_loop().call_soon(queue.put_nowait, ResultSeen("r2", b"{}"))
    assert await next_answer(queue, 5.0) == ResultSeen("r2", b"{}")


async def test_a_cancelled_wait_cancels_its_timer() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    waiting = asyncio.ensure_future(next_answer(queue, 0.05))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.1)  # past the timeout: a timer left running would have queued its marker
    assert queue.empty()
