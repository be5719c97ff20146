"""A circuit breaker per deployment (provider + model). Pure: time is passed in.

closed     calls pass; ``failures`` consecutive failures open it
open       calls are refused until ``opened_at + period``
half_open  one trial call passes; success closes, failure opens again for another period

breaker.allow(now) -> bool      may a call go out now? (in half-open: only the first)
breaker.success(now)            -> closed
breaker.failure(now) -> bool    True when this failure opened the circuit
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    failures: int = 3
    period: float = 30.0
    state: State = "closed"
    consecutive: int = 0
    opened_at: float = 0.0
    trial_out: bool = False  # half-open: the trial call is in flight

    @property
    def until(self) -> float:
        return self.opened_at + self.period if self.state != "closed" else 0.0

    def current(self, now: float) -> State:
        if self.state == "open" and now >= self.opened_at + self.period:
            self.state = "half_open"
            self.trial_out = False
        return self.state

    def allow(self, now: float) -> bool:
        state = self.current(now)
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_out:
            self.trial_out = True
            return True
        return False

    def success(self, now: float) -> bool:
        """Record a success; True when it closed an open or half-open circuit."""
        was_open = self.state != "closed"
        self.state, self.consecutive, self.trial_out = "closed", 0, False
        return was_open

    def failure(self, now: float) -> bool:
        """Record a failure that speaks about the deployment's health; True when it opened the circuit."""
        self.consecutive += 1
        if self.state == "half_open" or (self.state == "closed" and self.consecutive >= self.failures):
            self.state, self.opened_at, self.trial_out = "open", now, False
            return True
        return False

    def release(self) -> None:
        """A half-open trial ended without a verdict (the caller's own error): let another try."""
        if self.state == "half_open":
            self.trial_out = False
