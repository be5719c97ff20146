"""The cache's JetStream KV buckets (I/O): stored answers and remembered misses, shared by every instance.

    orch_cache          exact key -> CacheEntry (the answer), bucket TTL = cache.ttl
    orch_cache_pending  request id -> PendingStore (a miss waiting for its result), TTL = the dedupe window

The exact layer is one KV get; the semantic layer finds keys in the vector index and reads the answer
here, so an answer that expired in KV is gone from both layers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from actors.cache.errors import StoreError
from bus.subjects import KV_CACHE, KV_CACHE_PENDING, KVSpec
from schemas.cache import CACHE_ENTRY, PENDING_STORE, CacheEntry, PendingStore
from schemas.codec import encode
from schemas.errors import SchemaError

_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError)


def bucket_specs(ttl: float, pending_ttl: float) -> list[KVSpec]:
    return [
        KVSpec(KV_CACHE, "cached answers by exact key (writer: cache)", ttl=ttl),
        KVSpec(KV_CACHE_PENDING, "missed requests awaiting their result (writer: cache)", ttl=pending_ttl),
    ]


class ExactStore:
    def __init__(self, entries: KeyValue, pending: KeyValue) -> None:
        self.entries, self.pending = entries, pending

    @classmethod
    async def open(cls, js: JetStreamContext) -> ExactStore:
        try:
            return cls(await js.key_value(KV_CACHE), await js.key_value(KV_CACHE_PENDING))
        except _NATS_ERRORS as exc:
            raise StoreError(f"cannot open the KV buckets {KV_CACHE}, {KV_CACHE_PENDING}: {exc}") from exc

    async def get(self, key: str) -> CacheEntry | None:
        try:
            entry = await self.entries.get(key)
        except KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE} get: {exc}") from exc
        if not entry.value or entry.operation in (KV_DEL, KV_PURGE):
            return None
        try:
            return CACHE_ENTRY.decode(entry.value)
        except SchemaError:
            return None  # written by an incompatible version: a miss, overwritten by the next store

    async def put(self, entry: CacheEntry) -> None:
        try:
            await self.entries.put(entry.key, encode(entry))
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE} put: {exc}") from exc

    async def delete(self, key: str) -> None:
        try:
            await self.entries.purge(key)
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE} purge: {exc}") from exc

    async def stored(self) -> AsyncIterator[tuple[str, float]]:
        """(key, stored_at) of every live entry, read from the bucket's metadata only (no values)."""
        try:
            watcher = await self.entries.watchall(ignore_deletes=True, meta_only=True)
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE} watch: {exc}") from exc
        try:
            async for item in watcher:
                if item is None:
                    break
                created = item.created
                yield item.key, created.timestamp() if hasattr(created, "timestamp") else float(created or 0)
        finally:
            await watcher.stop()

    async def remember(self, pending: PendingStore) -> None:
        try:
            await self.pending.put(pending.request_id, encode(pending))
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE_PENDING} put: {exc}") from exc

    async def pending_for(self, request_id: str) -> PendingStore | None:
        try:
            entry = await self.pending.get(request_id)
        except KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE_PENDING} get: {exc}") from exc
        if not entry.value or entry.operation in (KV_DEL, KV_PURGE):
            return None
        try:
            return PENDING_STORE.decode(entry.value)
        except SchemaError:
            return None

    async def forget(self, request_id: str) -> None:
        try:
            await self.pending.purge(request_id)
        except _NATS_ERRORS as exc:
            raise StoreError(f"{KV_CACHE_PENDING} purge: {exc}") from exc
