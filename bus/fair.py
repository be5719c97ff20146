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

The pacing of heavy requests' whole round trips (bus/pacer.py) waits its turn in a FairQueue too.

Used where a client key's work is admitted: the gateway (a request's parse, publish and answer) and the
router (its cache lookups). While slots are free nothing waits and the gate is a counter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
HEAVY_EVERY = 8  # a waiting heavy request is granted at the latest after this many light ones passed it


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

    def enter(self: FairQueue[asyncio.Future[None]], key: str) -> asyncio.Future[None]:
        """A waiter for ``key``, at the back of its key's queue: granted by setting its result."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.push(key, granted)
        return granted

    async def granted(
        self: FairQueue[asyncio.Future[None]], key: str, waiter: asyncio.Future[None], pass_on: Callable[[], None]
    ) -> None:
        """Wait until ``waiter`` (from :meth:`enter`) is granted. Cancelled, it leaves the queue; cancelled
        just after its grant, it calls ``pass_on`` (what it was granted goes to the next)."""
        try:
            await waiter
        except asyncio.CancelledError:
            if not self.remove(key, waiter) and waiter.done() and not waiter.cancelled():
                pass_on()
            raise

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
        queue = self.heavy if heavy else self.queue
        await queue.granted(key, queue.enter(key), self.release)

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
