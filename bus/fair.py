"""Per-key fair queueing: who gets the next free slot when several client keys wait for one.

    FairQueue   pure ordering: one FIFO per key, the keys served in turn (round-robin). A key with 1,000
                requests waiting and a key with one take turns: the second waits for one slot, not for
                the 1,000 ahead of it.
    FairGate    ``slots`` holders at once; ``async with gate.slot(key)`` waits its turn in a FairQueue.
                A key may have at most ``max_waiting`` requests waiting (:class:`GateFull` beyond), so a
                flood cannot grow the queue (nor the bodies it holds) without bound. Light before heavy:
                ``gate.slot(key, heavy=True)`` (a megabyte body, a long prompt) waits in a queue of its
                own, granted only when no light request waits, or after ``HEAVY_EVERY`` light grants
                passed it (so a steady stream of small requests cannot starve it).
    Pacer       heavy requests' whole round trips while light requests are around: one at a time, spaced
                so that they take about ``share`` of the time; at once, side by side, when none is around.

Used where a client key's work is admitted: the gateway (a request's parse, publish and answer) and the
router (its cache lookups). While slots are free nothing waits and the gate is a counter.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Generic, TypeVar

T = TypeVar("T")
HEAVY_EVERY = 8  # a waiting heavy request is granted at the latest after this many light ones passed it
LIGHT_QUIET_S = 0.1  # light traffic is "around" until this long after the last light request ended
HEAVY_HELD_S = 0.1  # a heavy request's time counts up to this: the stack's part of it (decode, classify, cache
# lookup, dispatch: tens of milliseconds even for a megabyte prompt); past it, it is a generation on a model


class GateFull(Exception):
    """This key already has ``max_waiting`` requests waiting for a slot."""


class FairQueue(Generic[T]):
    """Items waiting per key; :meth:`pop` takes the oldest item of the next key in turn."""

    def __init__(self) -> None:
        self._ring: dict[str, deque[T]] = {}  # insertion order is the turn order
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def waiting(self, key: str) -> int:
        queue = self._ring.get(key)
        return len(queue) if queue is not None else 0

    def push(self, key: str, item: T) -> None:
        queue = self._ring.get(key)
        if queue is None:
            self._ring[key] = queue = deque()
        queue.append(item)
        self._count += 1

    def pop(self) -> tuple[str, T] | None:
        """The oldest item of the key whose turn it is; that key then goes to the back of the turn."""
        if not self._ring:
            return None
        key = next(iter(self._ring))
        queue = self._ring.pop(key)
        item = queue.popleft()
        self._count -= 1
        if queue:
            self._ring[key] = queue  # re-inserted: last in turn
        return key, item

    def remove(self, key: str, item: T) -> bool:
        """Take a waiting item out (its waiter gave up); False if it was not waiting."""
        queue = self._ring.get(key)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        self._count -= 1
        if not queue:
            del self._ring[key]
        return True


class FairGate:
    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots, self.max_waiting = slots, max_waiting
        self.busy = 0  # slots held
        self.queue: FairQueue[asyncio.Future[None]] = FairQueue()  # light requests waiting
        self.heavy: FairQueue[asyncio.Future[None]] = FairQueue()  # heavy ones: after the light, keys in turn
        self._passed = 0  # light grants since a heavy request last got one, while one waited

    def waiting(self, key: str) -> int:
        return self.queue.waiting(key) + self.heavy.waiting(key)

    def full(self, key: str) -> bool:
        """Whether a request of ``key`` would be refused now (check it before reading a body)."""
        return self.busy >= self.slots and self.waiting(key) >= self.max_waiting

    async def acquire(self, key: str, heavy: bool = False) -> None:
        if self.busy < self.slots and not len(self.queue) and not len(self.heavy):
            self.busy += 1
            return
        if self.waiting(key) >= self.max_waiting:
            raise GateFull(key)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self.heavy if heavy else self.queue
        queue.push(key, granted)
        try:
            await granted
        except asyncio.CancelledError:
            if not queue.remove(key, granted) and granted.done() and not granted.cancelled():
                self.release()  # granted as we were cancelled: pass the slot on
            raise

    def _next(self) -> tuple[str, asyncio.Future[None]] | None:
        """Light first; a waiting heavy request once no light one waits or HEAVY_EVERY light ones passed it."""
        if len(self.heavy) and (not len(self.queue) or self._passed >= HEAVY_EVERY):
            self._passed = 0
            return self.heavy.pop()
        if len(self.heavy):
            self._passed += 1
        return self.queue.pop()

    def release(self) -> None:
        self.busy -= 1
        while self.busy < self.slots:
            turn = self._next()
            if turn is None:
                return
            granted = turn[1]
            if not granted.done():
                self.busy += 1
                granted.set_result(None)

    def slot(self, key: str, heavy: bool = False) -> Slot:
        return Slot(self, key, heavy)


class Slot:
    """``async with gate.slot(key) as slot``: a slot for the block, or until ``slot.release()`` (a plain
    class: this is on every request's path)."""

    __slots__ = ("gate", "key", "heavy", "held")

    def __init__(self, gate: FairGate | None, key: str, heavy: bool = False) -> None:
        self.gate, self.key, self.heavy, self.held = gate, key, heavy, False

    async def __aenter__(self) -> Slot:
        if self.gate is not None:
            await self.gate.acquire(self.key, self.heavy)
            self.held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back before the block ends (once; later calls do nothing)."""
        if self.held and self.gate is not None:
            self.held = False
            self.gate.release()


def no_slot() -> Slot:
    """A Slot of no gate: nothing to wait for, nothing to release."""
    return Slot(None, "")


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
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.push(key, granted)
        self._arm()
        try:
            await granted
        except asyncio.CancelledError:
            if not self.queue.remove(key, granted) and granted.done() and not granted.cancelled():
                self.release(0.0)  # granted as we were cancelled: pass the turn on
            raise

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
