"""One configured provider at run time: its client, key, rate limits, circuit breakers and retries.

    provider = Provider("together", cfg, models, on_change=...)
    await provider.start()                       # session, key (the actor calls keys.load() every keys.refresh s)
    completion = await provider.run(call, "together/llama3.1-70b", deadline, on_text)
    provider.state()                             # the ProviderState record for KV

``run`` raises :class:`~actors.cloud_proxy.errors.ProviderError` subclasses only: Unavailable (no key,
disabled, circuit open), RateLimited (our own limit cannot pass before the deadline, or the provider's
429 after the retries), and whatever the last call failed with. Retryable errors are retried with
jittered backoff within the deadline, never after text was streamed to the client.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable

import aiohttp

from actors.cloud_proxy.breaker import CircuitBreaker
from actors.cloud_proxy.clients import Call, Completion, HttpClient, wire_for
from actors.cloud_proxy.clients.base import OnText
from actors.cloud_proxy.clients.embeddings import embed_body, embed_url, parse_embeddings
from actors.cloud_proxy.errors import AuthFailed, ProviderError, RateLimited, Timeout, Unavailable
from actors.cloud_proxy.limits import Limit, RateLimiter
from actors.cloud_proxy.retry import RetryPolicy
from actors.cloud_proxy.secrets import KeyRing, source_for
from bus.log import redact
from policy.pricing import estimate_tokens
from schemas.config.models import CloudModel
from schemas.config.providers import ProviderCfg
from schemas.events import ProviderCooldown
from schemas.result import ToolCallDelta
from schemas.state import ProviderState

log = logging.getLogger(__name__)

OnChange = Callable[["Provider", ProviderCooldown | None], Awaitable[None]]


class Provider:
    def __init__(self, name: str, cfg: ProviderCfg, models: dict[str, CloudModel], on_change: OnChange) -> None:
        self.name, self.cfg, self.models, self.on_change = name, cfg, models, on_change
        self.client = HttpClient(
            name, cfg.base_url, wire_for(cfg.api), concurrency=cfg.concurrency, connect_timeout=cfg.connect_timeout
        )
        self._vault: aiohttp.ClientSession | None = None
        source = source_for(cfg.api_key, self._vault_session) if cfg.api_key else None
        self.keys = KeyRing(name, source, float(cfg.api_key.refresh) if cfg.api_key else 60.0, self._key_changed)
        self.retry = RetryPolicy(cfg.retry.max_attempts, float(cfg.retry.base_delay), float(cfg.retry.max_delay))
        now = time.monotonic()
        shared = Limit.of(cfg.limits.rpm, cfg.limits.tpm, burst=float(cfg.limits.burst), now=now)
        self.limiters: dict[str, RateLimiter] = {}
        for model in models:
            own = cfg.model_limits.get(model)
            extra = [Limit.of(own.rpm, own.tpm, burst=float(own.burst), now=now)] if own else []
            self.limiters[model] = RateLimiter([shared, *extra])
        self.embed_limiter = RateLimiter([shared])  # embeddings count against the provider's own limits
        self.breakers = {m: CircuitBreaker(cfg.cooldown.failures, float(cfg.cooldown.period)) for m in models}
        self.slots = asyncio.Semaphore(cfg.concurrency)
        self.latencies: deque[float] = deque(maxlen=256)

    def _vault_session(self) -> aiohttp.ClientSession:
        if self._vault is None:
            self._vault = aiohttp.ClientSession(trust_env=False)
        return self._vault

    @property
    def available(self) -> bool:
        return self.cfg.enabled and self.keys.key is not None

    async def start(self) -> None:
        await self.client.start()
        await self.keys.load()

    async def close(self) -> None:
        await self.client.close()
        if self._vault is not None:
            await self._vault.close()

    async def _key_changed(self, present: bool) -> None:
        await self.on_change(self, None)

    def state(self) -> ProviderState:
        now_mono, now = time.monotonic(), time.time()
        cooling = {m: now + b.until - now_mono for m, b in self.breakers.items() if b.current(now_mono) != "closed"}
        paused = max((lim.paused_until for lim in self.limiters.values()), default=0.0)
        return ProviderState(
            provider=self.name,
            available=self.available,
            cooldown_until=now + paused - now_mono if paused > now_mono else 0.0,
            consecutive_failures=max((b.consecutive for b in self.breakers.values()), default=0),
            p50_latency_ms=round(statistics.median(self.latencies), 1) if self.latencies else 0.0,
            cooling=cooling,
            updated_at=now,
        )

    async def run(self, call: Call, model: str, deadline: float, on_text: OnText | None = None) -> Completion:
        """Generate, within ``deadline`` (epoch seconds), retrying what may be retried."""
        if model not in self.models:
            raise Unavailable(f"{self.name} does not serve model {model!r}")
        streamed = False

        async def forward(text: str | ToolCallDelta) -> None:
            nonlocal streamed
            streamed = True
            if on_text is not None:
                await on_text(text)

        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(call, model, deadline, forward if call.stream else None)
            except AuthFailed:
                if streamed or attempt >= self.retry.max_attempts or not await self.keys.load():
                    log.warning("%s: the provider refused our API key (%s)", self.name, model)
                    raise
                log.info("%s: key refused, retrying with the rotated key", self.name)
            except ProviderError as err:
                delay = None if streamed else self.retry.next_delay(err, attempt, deadline - time.time())
                if delay is None:
                    raise
                log.debug("%s %s: %s; retry %d in %.2fs", self.name, model, err.code, attempt, delay)
                await asyncio.sleep(delay)

    async def embed(
        self, remote: str, texts: list[str], dimensions: int | None, deadline: float
    ) -> tuple[list[list[float]], int]:
        """Vectors for ``texts`` and the input tokens (the provider's count, else estimated), within
        ``deadline``, retrying what may be retried; ProviderError subclasses only."""
        api = self.cfg.api
        url, body = embed_url(api, self.client.base_url, remote), embed_body(api, remote, texts, dimensions)
        estimated = sum(estimate_tokens(t) for t in texts)
        attempt = 0
        while True:
            attempt += 1
            key = self._embed_admit(estimated)
            try:
                async with asyncio.timeout(max(0.001, deadline - time.time())):
                    async with self.slots:
                        total = max(0.001, deadline - time.time())
                        timeout = self.client.timeout(total=total, idle=float(self.cfg.timeout))
                        data = await self.client.post_json(url, body, key, timeout=timeout)
                vectors, tokens = parse_embeddings(api, data, len(texts))
            except TimeoutError as exc:
                self.embed_limiter.settle(estimated, 0, time.monotonic())
                raise Timeout(f"{self.name}: no embeddings before the deadline") from exc
            except ProviderError as err:
                self.embed_limiter.settle(estimated, 0, time.monotonic())
                delay = self.retry.next_delay(err, attempt, deadline - time.time())
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            self.embed_limiter.settle(estimated, tokens or estimated, time.monotonic())
            return vectors, tokens if tokens is not None else estimated

    def _embed_admit(self, estimated: int) -> str:
        if not self.cfg.enabled:
            raise Unavailable(f"provider {self.name} is disabled")
        key = self.keys.key
        if key is None:
            raise Unavailable(f"provider {self.name} has no API key")
        now = time.monotonic()
        if self.embed_limiter.reserve(tokens=estimated, now=now, max_wait=0.0) is None:
            retry_after = round(self.embed_limiter.earliest(tokens=estimated, now=now), 3)
            raise RateLimited(f"{self.name}: over its rate limit", retry_after_s=retry_after)
        return key

    async def _once(self, call: Call, model: str, deadline: float, on_text: OnText | None) -> Completion:
        if not self.cfg.enabled:
            raise Unavailable(f"provider {self.name} is disabled")
        key = self.keys.key
        if key is None:
            where = self.keys.source.where if self.keys.source else "no api_key configured"
            raise Unavailable(f"provider {self.name} has no API key ({where})")
        mono = time.monotonic()
        breaker = self.breakers[model]
        if not breaker.allow(mono):
            wait = max(0.0, breaker.until - mono)
            raise Unavailable(f"{self.name} {model} is cooling down for {wait:.1f}s", retry_after_s=round(wait, 3))
        limiter = self.limiters[model]
        estimated = estimate_tokens(call.prompt_text()) + call.sampling.max_tokens
        remaining = deadline - time.time()
        reserved = limiter.reserve(tokens=estimated, now=mono, max_wait=remaining) if remaining > 0 else None
        if reserved is None:
            breaker.release()
            if remaining <= 0:
                raise Timeout("the request's deadline passed before the call")
            retry_after = round(limiter.earliest(tokens=estimated, now=mono), 3)
            message = f"{self.name} {model}: over its rate limit, next slot in {retry_after:.1f}s"
            raise RateLimited(message, retry_after_s=retry_after)
        if reserved > 0:
            await asyncio.sleep(reserved)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                await self.slots.acquire()
        except TimeoutError as exc:
            breaker.release()
            limiter.settle(estimated, 0, time.monotonic())
            raise Timeout(f"{self.name}: no free connection before the deadline") from exc
        started = time.monotonic()
        try:
            timeout = self.client.timeout(total=max(0.001, deadline - time.time()), idle=float(self.cfg.timeout))
            completion = await self.client.complete(call, key, timeout=timeout, on_text=on_text)
        except ProviderError as err:
            await self._failed(err, model, estimated)
            raise
        finally:
            self.slots.release()
        now = time.monotonic()
        self.latencies.append((now - started) * 1000.0)
        usage = completion.usage(call)
        limiter.settle(estimated, usage.total_tokens, now)
        if breaker.success(now):
            log.info("%s %s: circuit closed again", self.name, model)
            await self.on_change(self, None)
        return completion

    async def _failed(self, err: ProviderError, model: str, estimated: int) -> None:
        now = time.monotonic()
        limiter, breaker = self.limiters[model], self.breakers[model]
        limiter.settle(estimated, 0, now)
        if isinstance(err, RateLimited) and err.retry_after_s:
            limiter.pause_until(now + err.retry_after_s)
        if not err.trips_breaker:
            breaker.release()
            return
        if breaker.failure(now):
            until = time.time() + breaker.period
            log.warning(
                "%s %s: circuit open for %.0fs after %d failures (%s)",
                self.name,
                model,
                breaker.period,
                breaker.consecutive,
                err.code,
            )
            event = ProviderCooldown(
                provider=self.name,
                model=model,
                until=until,
                failures=breaker.consecutive,
                reason=redact(f"{err.code}: {err.message}")[:300],
            )
            await self.on_change(self, event)
