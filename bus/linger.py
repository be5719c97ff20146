"""Items gathered for a moment, then handed out together (``ConsumerSpec.linger``).

A consumer off the request path (the monitor, cache and guard folding every result) need not handle each
message the instant it arrives: handled together, their acks and the next pull request leave in one
write instead of one each, and their work runs after the gateway has answered instead of beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Linger(Generic[T]):
    def __init__(self, delay: float, release: Callable[[list[T]], None]) -> None:
        self.delay = delay
        self._release = release
        self._items: list[T] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, item: T) -> None:
        """Held until ``delay`` after the first item of the batch arrived (no delay: released now)."""
        if self.delay <= 0:
            self._release([item])
            return
        if not self._items:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self.flush)
        self._items.append(item)

    def flush(self) -> None:
        """Hand out what is held now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if items:
            self._release(items)
