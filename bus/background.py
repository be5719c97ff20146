"""Work an actor starts and does not wait for (a confirmation after a reply, an event sent without its
ack, a timer's message): tasks kept until they end, cancelled at stop. A failure is one warning line,
not asyncio's "Task exception was never retrieved" with a traceback: when the bus refuses the same thing
many times (the budget_guard with LEDGER full), that was one traceback per refusal.

    background = Background(log, "ledger work")
    background.run(coro)        # started now; a failure: "background ledger work failed: <type>: <why>"
    background.cancel()         # at stop
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any


class Background:
    def __init__(self, log: logging.Logger, what: str = "work") -> None:
        self.log, self.what = log, what
        self.tasks: set[asyncio.Future[Any]] = set()

    def run(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.warning("background %s failed: %s: %s", self.what, type(exc).__name__, exc)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
