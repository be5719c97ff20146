"""Work off the request path, done in batches at a moment of its own.

    Linger(delay, release)   items gathered for ``delay`` seconds, then handed out together (the router's
                             outcomes of answered requests: actors/router/heard.py)
    Poll(every)              when a consumer with ``ConsumerSpec.linger`` > 0 asks the server next

A consumer that folds results (the monitor, cache and guard) need not see each message the instant it is
stored. Kept waiting on an outstanding pull, it was woken by every result at the very moment the gateway
had to answer it: on a small machine three more processes competing for the cores, each request. Such a
consumer polls instead (a ``no_wait`` pull for its free slots): every ``linger`` seconds while results
keep coming, at once while polls come back full, and, after a poll that found nothing, less and less
often up to ``idle_max`` (an idle stack does not spin). A poll's messages arrive together and are
handled, and acked, together: their acks and the next poll leave in one write. Nothing else changes:
each message is acked after its handler returned.
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


POLL_IDLE_MAX = 0.25  # seconds between polls that find nothing, at most


class Poll:
    """The pace of one consumer's polls: ``sent`` when one goes out, ``received`` per message it brings,
    ``due_in`` once it is answered (its messages came, or a status said there are no more)."""

    def __init__(self, every: float, idle_max: float = POLL_IDLE_MAX) -> None:
        self.every, self.idle_max = every, max(every, idle_max)
        self.interval = every
        self.sent_at = 0.0  # monotonic
        self.asked = 0  # the batch of the last poll (0: none yet)
        self.got = 0  # messages received since it was sent
        self._answered = True

    def received(self) -> None:
        self.got += 1

    def due_in(self, now: float) -> float:
        """Seconds until the next poll; called once the last one is answered (nothing outstanding)."""
        if not self._answered:  # what the last poll brought sets the pace
            self._answered = True
            if self.got >= self.asked:
                self.interval = 0.0  # full: more are waiting
            elif self.got:
                self.interval = self.every
            else:
                self.interval = min(self.idle_max, max(self.every, 2 * self.interval))
        return max(0.0, self.sent_at + self.interval - now) if self.asked else 0.0

    def sent(self, now: float, batch: int) -> None:
        self.sent_at, self.asked, self.got, self._answered = now, batch, 0, False
