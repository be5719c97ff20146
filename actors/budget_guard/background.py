"""The guard's work after a reply (confirming a ledger entry written ahead, rolling back a reservation the
ledger refused, a notification): tasks it keeps until they end, cancelled at stop. A failure is one
warning line, not asyncio's "exception was never retrieved" with a traceback: when LEDGER is full, every
refused reservation's rollback fails the same way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.tasks: set[asyncio.Task[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.warning("background ledger work failed: %s: %s", type(exc).__name__, exc)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
