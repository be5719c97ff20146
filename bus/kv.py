"""Typed JetStream KV buckets and live views.

    TypedKV(kv, codec)    put / get / delete / purge / items / stamps of one bucket, values are Structs
    LiveView              a dict kept current by a KV watch; readers never do I/O on the hot path

Names are escaped into KV keys with :func:`bus.subjects.kv_key` and back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from bus.subjects import kv_key, un_kv_key
from schemas.codec import Codec, encode
from schemas.errors import SchemaError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TypedKV(Generic[T]):
    """``lenient``: a value that does not decode reads as missing (a cache written by another version)
    instead of raising SchemaError."""

    def __init__(self, kv: KeyValue, codec: Codec[T], *, lenient: bool = False) -> None:
        self.kv = kv
        self.codec = codec
        self.lenient = lenient

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, codec: Codec[T], *, lenient: bool = False) -> TypedKV[T]:
        return cls(await js.key_value(bucket), codec, lenient=lenient)

    async def put(self, name: str, value: T) -> int:
        return await self.kv.put(kv_key(name), encode(value))

    async def get(self, name: str) -> T | None:
        try:
            entry = await self.kv.get(kv_key(name))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.operation in (KV_DEL, KV_PURGE):
            return None
        try:
            return self.codec.decode(entry.value)
        except SchemaError:
            if self.lenient:
                return None
            raise

    async def delete(self, name: str) -> None:
        await self.kv.delete(kv_key(name))

    async def purge(self, name: str) -> None:
        """Delete a key and its history."""
        await self.kv.purge(kv_key(name))

    async def stamps(self) -> AsyncIterator[tuple[str, float]]:
        """(name, stored at, epoch seconds) of every live key, from the bucket's metadata only (no values)."""
        watcher = await self.kv.watchall(ignore_deletes=True, meta_only=True)
        try:
            async for item in watcher:
                if item is None:
                    break
                created = item.created
                yield un_kv_key(item.key), created.timestamp() if hasattr(created, "timestamp") else float(created or 0)
        finally:
            await watcher.stop()

    async def items(self) -> dict[str, T]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return {}
        out: dict[str, T] = {}
        for key in keys:
            value = await self.get(un_kv_key(key))
            if value is not None:
                out[un_kv_key(key)] = value
        return out

    async def watch(self) -> AsyncIterator[tuple[str, T | None] | None]:
        """Current values, then ``None`` (caught up), then every change; deletes yield (name, None)."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    yield None
                    continue
                name = un_kv_key(entry.key)
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    yield name, None
                    continue
                try:
                    yield name, self.codec.decode(entry.value)
                except SchemaError as exc:
                    log.warning("ignoring malformed %s in %s: %s", name, self.kv._name, exc)
        finally:
            await watcher.stop()


class LiveView(Generic[T]):
    """A dict mirrored from a KV bucket. Run ``run()`` as a supervised task; wait on ``ready``."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        codec: Codec[T],
        on_change: Callable[[str, T | None], None] | None = None,
    ) -> None:
        self.js, self.bucket, self.codec, self.on_change = js, bucket, codec, on_change
        self.data: dict[str, T] = {}
        self.ready = asyncio.Event()

    def get(self, name: str) -> T | None:
        return self.data.get(name)

    async def refresh(self, name: str) -> T | None:
        """Read one key from the server now (its latest stored value: never older than the watch's), for
        when the watch may be behind (it is being re-created after a node of the cluster died)."""
        value = await (await TypedKV.open(self.js, self.bucket, self.codec)).get(name)
        if value is not None:
            self.data[name] = value
        return value

    async def run(self) -> None:
        kv = await TypedKV.open(self.js, self.bucket, self.codec)
        fresh: dict[str, T] | None = {}  # rebuilt from scratch on every (re)start of the watch
        async for item in kv.watch():
            if item is None:
                if fresh is not None:
                    # A watch re-created while its bucket had no leader (a cluster node died) can find
                    # nothing at first: keep what we knew rather than forget every key until they change.
                    if fresh or not self.ready.is_set():
                        self.data = fresh
                    fresh = None
                    self.ready.set()
                continue
            name, value = item
            target = fresh if fresh is not None else self.data
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
            if fresh is None and self.on_change is not None:
                self.on_change(name, value)
