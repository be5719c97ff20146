"""A token bucket (pure): up to ``capacity`` units, refilled at ``rate`` units per second. Time is passed in
(``now``), never read here.

    bucket = TokenBucket.per_minute(600, burst=60)     # or TokenBucket(capacity=200, rate=50.0)
    bucket.wait_for(1, now)     # seconds until 1 unit could be taken (0: now); takes nothing
    bucket.take(1, now)         # may drive it into debt, repaid by the refill
    bucket.try_take(1, now)     # takes it only if it is there now: whether it did
    bucket.give(1, now)         # back, up to the capacity

The cloud_proxy's rpm/tpm limits (``actors/cloud_proxy/limits.py``) wait out a debt; the diversity_monitor's
embedding allowance skips what does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    capacity: float
    rate: float  # units per second
    level: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.capacity

    @classmethod
    def per_minute(cls, limit: int, *, burst: float = 60.0, now: float = 0.0) -> TokenBucket:
        """``limit`` units per minute; at most ``burst`` seconds' worth may be spent at once."""
        rate = limit / 60.0
        capacity = max(1.0, rate * min(burst, 60.0))
        return cls(capacity=capacity, rate=rate, level=capacity, updated=now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` could be taken (0 when it can be now). Takes nothing."""
        self._refill(now)
        amount = min(amount, self.capacity)  # a request larger than the bucket passes when it is full
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def try_take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if it can be taken now (never into debt): whether it was."""
        if self.wait_for(amount, now) > 0:
            return False
        self.take(amount, now)
        return True

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= min(amount, self.capacity)

    def give(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)
