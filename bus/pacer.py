"""Work-conserving pacing of heavy requests' whole round trips at the gateway (``gateway.heavy_share``).

Pacer       while light requests are around, heavy ones (a long prompt, a big body) run one at a time,
            keys in turn (a :class:`~bus.fair.FairQueue`), spaced so that they take about ``share`` of
            the stack's time; with no light request around, at once, side by side.
LightTurn   ``async with pacer.light():`` around a light request (nothing to wait for).
HeavyTurn   ``async with pacer.turn(key) as turn:`` around a heavy one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from time import monotonic

from bus.fair import FairQueue, GateFull

LIGHT_QUIET_S = 0.1  # light traffic is "around" until this long after the last light request ended
HEAVY_HELD_S = 0.1  # a heavy request's time counts up to this: the stack's part of it (decode, classify, cache
# lookup, dispatch: tens of milliseconds even for a megabyte prompt); past it, it is a generation on a model


class Pacer:
    """Work-conserving pacing of heavy requests (long prompts, big bodies) while light ones are around.

    A light request is *around* while one is in flight (``light()``) or one ended less than ``quiet_s``
    ago (a client asking one question after another has no request in flight between two of them).
    ``async with pacer.turn(key)`` for a heavy request:

    - no light request around: it runs at once, with any number of other heavy ones (the stack is free);
    - light requests around: heavy ones run one at a time, keys in turn, and each starts no earlier than
      ``held * (1 - share) / share`` after the previous one ended, ``held`` the previous one's own time
      (at most ``max_held_s``, 0.1 s: past that a request is a generation on a model, not the stack's work). So
      the heavy requests' downstream work (the router, the cache, the bus carrying their text) takes about
      ``share`` of the time and light requests the rest.

    A waiting heavy request goes as soon as either holds (the light traffic ended, or its paced time came).
    ``share`` 1.0 turns pacing off (heavy requests always run at once).
    ``clock`` is injectable for tests, which then call :meth:`wake` where a timer would have.
    """

    def __init__(
        self,
        share: float,
        *,
        max_waiting: int = 64,
        quiet_s: float = LIGHT_QUIET_S,
        max_held_s: float = HEAVY_HELD_S,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.share, self.max_waiting, self.clock = share, max_waiting, clock
        self.quiet_s, self.max_held_s = quiet_s, max_held_s
        self.light_inflight = 0
        self.light_ended = -math.inf  # when the last light request ended
        self.running = 0  # heavy requests holding a turn
        self.next_at = -math.inf  # while light is around, the next heavy request starts no earlier
        self.queue: FairQueue[asyncio.Future[None]] = FairQueue()
        self._timer: asyncio.TimerHandle | None = None

    def light_around(self, now: float) -> bool:
        return self.light_inflight > 0 or now < self.light_ended + self.quiet_s

    def _may_go(self, now: float) -> bool:
        if self.share >= 1.0 or not self.light_around(now):
            return True  # pacing off, or the stack is free of light requests: work-conserving
        return self.running == 0 and now >= self.next_at

    def light(self) -> LightTurn:
        """``async with pacer.light():`` around a light request's round trip (nothing to wait for)."""
        return LightTurn(self)

    def turn(self, key: str) -> HeavyTurn:
        return HeavyTurn(self, key)

    async def acquire(self, key: str) -> None:
        if not len(self.queue) and self._may_go(self.clock()):
            self.running += 1
            return
        if self.queue.waiting(key) >= self.max_waiting:
            raise GateFull(key)
        waiter = self.queue.enter(key)
        self._arm()
        await self.queue.granted(key, waiter, lambda: self.release(0.0))

    def release(self, held_s: float) -> None:
        """A heavy request's turn ended after ``held_s`` seconds of the stack's time."""
        self.running -= 1
        self.charge(held_s)

    def charge(self, held_s: float) -> None:
        """Space the next heavy request by ``held_s`` seconds of the stack's time (at most ``max_held_s``)."""
        held = min(max(held_s, 0.0), self.max_held_s)
        self.next_at = max(self.next_at, self.clock() + held * (1.0 - self.share) / self.share)
        self.wake()

    def light_ended_now(self) -> None:
        self.light_inflight -= 1
        self.light_ended = self.clock()
        if self.light_inflight == 0 and len(self.queue):
            self._arm()  # the heavy ones may go once the light traffic stays away for quiet_s

    def wake(self) -> None:
        """Grant the waiting heavy requests that may go now; arm a timer for the next moment one may."""
        now = self.clock()
        while len(self.queue) and self._may_go(now):
            turn = self.queue.pop()
            if turn is not None and not turn[1].done():
                self.running += 1
                turn[1].set_result(None)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not len(self.queue):
            return
        now = self.clock()
        moments = [self.light_ended + self.quiet_s] if self.light_inflight == 0 else []
        if self.running == 0:
            moments.append(self.next_at)
        if moments:  # else: a release or the light traffic's end will wake the queue
            delay = max(min(moments) - now, 0.0)
            self._timer = asyncio.get_running_loop().call_later(delay, self.wake)


class LightTurn:
    __slots__ = ("pacer",)

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer

    async def __aenter__(self) -> LightTurn:
        self.pacer.light_inflight += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pacer.light_ended_now()


class HeavyTurn:
    """``async with pacer.turn(key) as turn``: the turn is given back at the block's end or after
    ``max_held_s``, whichever comes first (a long generation does not hold the other heavy requests back).
    The next heavy request is spaced by the stack's part of this one's time: its round trip less
    ``turn.model_s``, the seconds a model spent on it (a result's load + generation time), which the
    block sets when it knows them; a turn given back early is charged when the block ends."""

    __slots__ = ("pacer", "key", "started", "held", "expired", "model_s", "_expiry")

    def __init__(self, pacer: Pacer, key: str) -> None:
        self.pacer, self.key, self.started, self.held, self.expired = pacer, key, 0.0, False, False
        self.model_s = 0.0
        self._expiry: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> HeavyTurn:
        await self.pacer.acquire(self.key)
        self.held, self.started = True, self.pacer.clock()
        self._expiry = asyncio.get_running_loop().call_later(self.pacer.max_held_s, self._expire)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def _stack_s(self) -> float:
        return self.pacer.clock() - self.started - self.model_s

    def _expire(self) -> None:
        """``max_held_s`` passed: the others may go; what this one cost is known at its end."""
        self._expiry = None
        if self.held:
            self.held, self.expired = False, True
            self.pacer.release(0.0)

    def release(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.held:
            self.held = False
            self.pacer.release(self._stack_s())
        elif self.expired:
            self.expired = False
            self.pacer.charge(self._stack_s())
