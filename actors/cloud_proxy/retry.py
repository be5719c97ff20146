"""When to try a failed provider call again, and after how long. Pure: randomness is passed in.

Only retryable errors (rate limited, server error, timeout) are retried, at most ``max_attempts``
calls in all, and only when the wait still ends before the request's deadline. The wait is "full
jitter" exponential backoff (uniform in [0, min(max_delay, base x 2^n)]), never shorter than the
provider's Retry-After.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from actors.cloud_proxy.errors import ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered wait after failed call number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)

    def next_delay(
        self,
        error: ProviderError,
        attempt: int,
        remaining: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before call ``attempt + 1``, or None: give up (not retryable, no attempts
        left, or the wait would pass the deadline)."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt, rng)
        if error.retry_after_s is not None:
            delay = max(delay, error.retry_after_s)
        if delay >= remaining:
            return None
        return delay
