"""What the cache actor handles: the one union its ``handle`` matches on.

ResultStored(d)   orch.result.<origin>.<id> from its RESULTS consumer: store the answer of a remembered miss
Lookup(msg)       orch.svc.cache.lookup: exact, then semantic (the reply is returned)
Embed(msg)        orch.svc.cache.embed: MiniLM vectors for /v1/embeddings (the reply is returned)
SweepTick()       every ttl/4 (1..60 s): drop expired entries
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.consumer import Delivery
from schemas.cache import CacheLookup, EmbedRequest


@dataclass(frozen=True)
class ResultStored:
    d: Delivery


@dataclass(frozen=True)
class Lookup:
    msg: CacheLookup


@dataclass(frozen=True)
class Embed:
    msg: EmbedRequest


@dataclass(frozen=True)
class SweepTick:
    pass


CacheMsg = ResultStored | Lookup | Embed | SweepTick
