"""For the router: ask the cache, never wait on it longer than ``cache.lookup_timeout``.

    reply = await cache_lookup(nc, request, timeout=float(cfg.cache.lookup_timeout))
    if reply is not None and reply.hit:
        await publish_outcome(actor, reply.result)   # the final outcome; nothing else to emit
        return

None means "go on without the cache" (no cache running, too slow, or it answered with an error). Light:
it imports no embedding or vector code.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS

from bus.errors import ServiceCallError
from bus.service import call
from bus.subjects import SVC_CACHE_LOOKUP
from schemas.cache import CACHE_REPLY, CacheLookup, CacheReply
from schemas.request import GenerateRequest

log = logging.getLogger(__name__)


async def cache_lookup(nc: NATS, request: GenerateRequest, *, timeout: float = 0.5) -> CacheReply | None:
    try:
        return await call(nc, SVC_CACHE_LOOKUP, CacheLookup(request=request), CACHE_REPLY, timeout=timeout)
    except ServiceCallError as exc:
        log.debug("cache lookup for %s skipped: %s", request.id, exc)
        return None
