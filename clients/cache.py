"""The router's side of the cache: ask it, never wait on it longer than ``cache.lookup_timeout``.

    self.cache = CacheClient(self)                 # in the router, like BudgetClient
    result = await self.cache.lookup(request)      # before dispatching a request
    if result is not None:                         # a hit: the final outcome, for this request's id
        await publish_outcome(self, result)        # nothing else to emit (the cache emitted CacheHit)

``lookup`` returns None on a miss, on a request the cache may not answer (the cache then says why in
its reply), when no cache runs, when it is slower than the timeout (waiting for a turn included), or when
it answers with an error: the router goes on without it. At most ``cache.lookup_slots`` lookups of one
router are in flight; beyond, the client keys take turns (:mod:`bus.fair`), so one key's flood of
lookups does not queue ahead of another key's in the cache. A miss is remembered by the cache itself;
the router does nothing more. Light: it imports no embedding or vector code.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client as NATS

from bus.actor import Actor
from bus.errors import ServiceCallError
from bus.fair import FairGate, GateFull
from bus.service import call
from bus.subjects import SVC_CACHE_LOOKUP
from policy.caching import decide
from schemas.cache import CACHE_REPLY, CacheLookup, CacheReply
from schemas.request import GenerateRequest
from schemas.result import GenerateResult

log = logging.getLogger(__name__)
WARN_EVERY = 60.0


async def cache_lookup(nc: NATS, request: GenerateRequest, *, timeout: float = 0.5) -> CacheReply:
    """One call to ``orch.svc.cache.lookup``; raises ServiceCallError (timeout, unavailable, ...)."""
    return await call(nc, SVC_CACHE_LOOKUP, CacheLookup(request=request), CACHE_REPLY, timeout=timeout)


class CacheClient:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self._warned = 0.0
        self.gate = FairGate(actor.cfg.cache.lookup_slots, max_waiting=actor.cfg.router.concurrency)

    async def lookup(self, request: GenerateRequest) -> GenerateResult | None:
        cfg = self.actor.cfg.cache
        decision = decide(request, enabled=cfg.enabled)
        if not (decision.lookup or decision.store):
            return None  # nothing to look up and nothing to remember: no round trip
        timeout = float(cfg.lookup_timeout)
        try:
            async with asyncio.timeout(timeout), self.gate.slot(request.client_key or ""):
                reply = await cache_lookup(self.actor.nc, request, timeout=timeout)
        except (GateFull, TimeoutError):
            return None  # no turn in time: a miss, as when the cache is slow
        except ServiceCallError as exc:
            now = time.monotonic()
            if now - self._warned > WARN_EVERY:
                self._warned = now
                log.warning("going on without the cache: %s", exc)
            return None
        return reply.result if reply.hit else None
