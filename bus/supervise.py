"""Supervised background tasks: a crash is logged once with its traceback and the task restarts
with exponential backoff; a task that ends normally is not restarted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable


class Supervisor:
    def __init__(self, log: logging.Logger, *, min_backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        self.log = log
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.crashes: dict[str, int] = {}

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = True) -> asyncio.Task[None]:
        if name in self.tasks and not self.tasks[name].done():
            raise ValueError(f"a task named {name!r} is already running")
        task = asyncio.create_task(self._run(name, factory, restart), name=name)
        self.tasks[name] = task
        return task

    async def _run(self, name: str, factory: Callable[[], Awaitable[None]], restart: bool) -> None:
        backoff = self.min_backoff
        while True:
            started = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                count = self.crashes[name] = self.crashes.get(name, 0) + 1
                if time.monotonic() - started > 60:
                    backoff = self.min_backoff  # it ran fine for a while: start the backoff over
                if count == 1:
                    self.log.exception("task %s crashed; restarting in %.1fs", name, backoff)
                else:
                    self.log.warning(
                        "task %s crashed again (%d times): %s; restarting in %.1fs", name, count, exc, backoff
                    )
                if not restart:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def stop(self, timeout: float = 5.0) -> None:
        tasks = [t for t in self.tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=timeout)
        self.tasks.clear()
