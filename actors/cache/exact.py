"""The cache's JetStream KV buckets (I/O): stored answers and remembered misses, shared by every instance.

    orch_cache          exact key -> CacheEntry (the answer), bucket TTL = cache.ttl
    orch_cache_pending  request id -> PendingStore (a miss waiting for its result), TTL = the dedupe window

The exact layer is one KV get; the semantic layer finds keys in the vector index and reads the answer
here, so an answer that expired in KV is gone from both layers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import nats.errors
from nats.js import JetStreamContext

from actors.cache.errors import StoreError
from bus.kv import TypedKV
from bus.subjects import KV_CACHE, KV_CACHE_PENDING, KVSpec
from schemas.cache import CACHE_ENTRY, PENDING_STORE, CacheEntry, PendingStore

_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError)


def bucket_specs(ttl: float, pending_ttl: float) -> list[KVSpec]:
    return [
        KVSpec(KV_CACHE, "cached answers by exact key (writer: cache)", ttl=ttl),
        KVSpec(KV_CACHE_PENDING, "missed requests awaiting their result (writer: cache)", ttl=pending_ttl),
    ]


class ExactStore:
    """The two buckets as TypedKVs (bus/kv.py), lenient: an entry written by an incompatible version is a
    miss, overwritten by the next store. NATS errors become StoreError here, at the boundary."""

    def __init__(self, entries: TypedKV[CacheEntry], pending: TypedKV[PendingStore]) -> None:
        self.entries, self.pending = entries, pending

    @classmethod
    async def open(cls, js: JetStreamContext) -> ExactStore:
        try:
            entries = await TypedKV.open(js, KV_CACHE, CACHE_ENTRY, lenient=True)
            return cls(entries, await TypedKV.open(js, KV_CACHE_PENDING, PENDING_STORE, lenient=True))
        except _NATS_ERRORS as exc:
            raise StoreError(f"cannot open the KV buckets {KV_CACHE}, {KV_CACHE_PENDING}: {exc}") from exc

    async def get(self, key: str) -> CacheEntry | None:
        with _store_errors(KV_CACHE, "get"):
            return await self.entries.get(key)

    async def put(self, entry: CacheEntry) -> None:
        with _store_errors(KV_CACHE, "put"):
            await self.entries.put(entry.key, entry)

    async def delete(self, key: str) -> None:
        with _store_errors(KV_CACHE, "purge"):
            await self.entries.purge(key)

    async def stored(self) -> AsyncIterator[tuple[str, float]]:
        """(key, stored_at) of every live entry, read from the bucket's metadata only (no values)."""
        with _store_errors(KV_CACHE, "watch"):
            async for item in self.entries.stamps():
                yield item

    async def remember(self, pending: PendingStore) -> None:
        with _store_errors(KV_CACHE_PENDING, "put"):
            await self.pending.put(pending.request_id, pending)

    async def pending_for(self, request_id: str) -> PendingStore | None:
        with _store_errors(KV_CACHE_PENDING, "get"):
            return await self.pending.get(request_id)

    async def forget(self, request_id: str) -> None:
        with _store_errors(KV_CACHE_PENDING, "purge"):
            await self.pending.purge(request_id)


@contextlib.contextmanager
def _store_errors(bucket: str, what: str) -> Iterator[None]:
    try:
        yield
    except _NATS_ERRORS as exc:
        raise StoreError(f"{bucket} {what}: {exc}") from exc
