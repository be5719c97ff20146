"""The guard's work after a reply: a failure is one warning line, never asyncio's unretrieved exception."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from bus.background import Background


async def test_a_failed_background_write_is_one_warning_and_nothing_is_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unretrieved: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
    work = Background(logging.getLogger("test.guard"), "ledger work")

    async def refused() -> None:
        raise RuntimeError("maximum bytes exceeded")

    async def fine() -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="test.guard"):
        for _ in range(3):
            work.run(refused())
        work.run(fine())
        await asyncio.wait(list(work.tasks))  # waits without retrieving their exceptions
        gc.collect()  # an unretrieved exception is reported when its task is collected
    failures = [r.getMessage() for r in caplog.records]
    assert failures == ["background ledger work failed: RuntimeError: maximum bytes exceeded"] * 3
    assert not unretrieved


async def test_cancel_stops_what_still_runs() -> None:
    work = Background(logging.getLogger("test.guard"), "ledger work")
    never = asyncio.Event()
    work.run(never.wait())
    await asyncio.sleep(0)
    running = list(work.tasks)
    work.cancel()
    await asyncio.wait(running)
    assert running[0].cancelled() and not work.tasks
