"""Rate limits: token buckets for requests/min and tokens/min, per provider and per model. Pure.

Each is a :class:`policy.tokenbucket.TokenBucket`: taking more than it holds drives it into debt, the taker
waits until the debt is repaid, so waiting callers queue fairly in the order they reserved. Time is passed
in (``now``), never read here.

    limiter = RateLimiter([TokenBucket.per_minute(600, burst=60), ...])
    wait = limiter.reserve(requests=1, tokens=estimate, now=t, max_wait=deadline - t)
    # None: it cannot pass within max_wait (nothing was taken); else sleep ``wait`` seconds and send
    limiter.settle(estimated, actual, now)   # give back / charge the difference once usage is known
    limiter.pause_until(t + retry_after)    # the provider said 429: nobody sends before then
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.tokenbucket import TokenBucket


@dataclass
class Limit:
    """The rpm and tpm buckets of one scope (a provider or one of its models); either may be absent."""

    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None

    @classmethod
    def of(cls, rpm: int | None, tpm: int | None, *, burst: float = 60.0, now: float = 0.0) -> Limit:
        return cls(
            TokenBucket.per_minute(rpm, burst=burst, now=now) if rpm else None,
            TokenBucket.per_minute(tpm, burst=burst, now=now) if tpm else None,
        )


class RateLimiter:
    """All the limits one call must pass (the provider's and its model's), reserved together."""

    def __init__(self, limits: list[Limit]) -> None:
        self.limits = [lim for lim in limits if lim.requests or lim.tokens]
        self.paused_until = 0.0

    def _buckets(self) -> list[tuple[TokenBucket, bool]]:
        out: list[tuple[TokenBucket, bool]] = []
        for lim in self.limits:
            if lim.requests:
                out.append((lim.requests, False))
            if lim.tokens:
                out.append((lim.tokens, True))
        return out

    def reserve(self, *, tokens: int, now: float, max_wait: float) -> float | None:
        """Seconds to wait before sending, with the units taken; None (nothing taken) if over max_wait."""
        buckets = self._buckets()
        wait = max(0.0, self.paused_until - now)
        for bucket, is_tokens in buckets:
            wait = max(wait, bucket.wait_for(tokens if is_tokens else 1, now))
        if wait > max_wait:
            return None
        for bucket, is_tokens in buckets:
            bucket.take(tokens if is_tokens else 1, now)
        return wait

    def earliest(self, *, tokens: int, now: float) -> float:
        """Seconds until a call of this size could pass (for Retry-After on a refusal)."""
        wait = max(0.0, self.paused_until - now)
        for bucket, is_tokens in self._buckets():
            wait = max(wait, bucket.wait_for(tokens if is_tokens else 1, now))
        return wait

    def settle(self, estimated: int, actual: int, now: float) -> None:
        """Correct the tokens taken at reservation by what the call really used."""
        for lim in self.limits:
            if lim.tokens is None:
                continue
            if actual < estimated:
                lim.tokens.give(estimated - actual, now)
            elif actual > estimated:
                lim.tokens.take(actual - estimated, now)

    def pause_until(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)
