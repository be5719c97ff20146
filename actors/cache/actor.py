"""The cache actor: answers ``orch.svc.cache.lookup`` and stores final results from ``orch.result.<origin>.<id>``.

    router --CacheLookup--> orch.svc.cache.lookup --CacheReply--> router
    orch.result.<origin>.<id> (stream RESULTS, durable "cache", new messages) --> store the answer of a remembered miss

At start it builds (first start) or checks the offline MiniLM model and loads it — a missing or corrupt
model is a clear error and the actor does not start — then opens the vector index (embedded under
``data_dir``, or a Qdrant server when ``cache.semantic.qdrant_url`` is set) and its KV buckets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from actors.cache.core import ResponseCache
from actors.cache.errors import CacheError, StoreError
from actors.cache.exact import ExactStore, bucket_specs
from actors.cache.index import EmbeddedIndex, QdrantIndex, VectorIndex
from actors.cache.messages import CacheMsg, Embed, Lookup, ResultStored, SweepTick
from actors.cache.verifier import Verifier
from bus.actor import Actor
from bus.consumer import OFF_PATH_CONCURRENCY, OFF_PATH_LINGER, ConsumerSpec, Delivery
from bus.errors import ServiceCallError, StartError, Transient
from bus.log import register_secret
from bus.service import ServiceSpec
from bus.subjects import RESULT_FINAL, RESULTS_STREAM, SVC_CACHE_EMBED, SVC_CACHE_LOOKUP, KVSpec
from schemas.cache import CACHE_LOOKUP, EMBED_MODEL, EMBED_REQUEST, CacheLookup, CacheReply, EmbedReply, EmbedRequest
from schemas.codec import OUTCOME
from schemas.config.providers import SecretRef
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo
from schemas.events import CacheHit
from schemas.result import GenerateError, GenerateResult
from weights.embedder import MAX_FIT_CHARS, Embedder
from weights.errors import WeightsError
from weights.minilm import MAX_SEQ_LENGTH, VECTOR_SPACE


def read_secret(ref: SecretRef) -> str:
    """The Qdrant API key from the environment or a file; registered so that logs mask it."""
    if ref.env is not None:
        value = os.environ.get(ref.env, "").strip()
        if not value:
            raise CacheError(f"cache.semantic.qdrant_api_key: environment variable {ref.env} is not set")
    elif ref.file is not None:
        try:
            value = Path(ref.file).expanduser().read_text().strip()
        except OSError as exc:
            raise CacheError(f"cache.semantic.qdrant_api_key: cannot read {ref.file}: {exc.strerror}") from exc
    else:
        raise CacheError("cache.semantic.qdrant_api_key: the cache actor reads `env` or `file`, not `vault`")
    register_secret(value)
    return value


class CacheActor(Actor):
    """Exact and semantic response cache (fastembed MiniLM + vector index), shared by every router."""

    name = "cache"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self.cache: ResponseCache | None = None
        self.embedder: Embedder | None = None
        self.verifier: Verifier | None = None
        self.index: VectorIndex | None = None
        self._events: set[asyncio.Task[None]] = set()

    # --- what the actor declares -----------------------------------------------------------------
    def buckets(self) -> list[KVSpec]:
        return bucket_specs(ttl=float(self.cfg.cache.ttl), pending_ttl=float(self.cfg.bus.streams.dedupe_window))

    def services(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(SVC_CACHE_LOOKUP, lambda msg: self.handle(Lookup(msg)), CACHE_LOOKUP),
            ServiceSpec(SVC_CACHE_EMBED, lambda msg: self.handle(Embed(msg)), EMBED_REQUEST, concurrency=8),
        ]

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream=RESULTS_STREAM,
                durable="cache",
                subjects=(RESULT_FINAL,),
                handler=self.deliver(ResultStored),
                concurrency=OFF_PATH_CONCURRENCY,
                linger=OFF_PATH_LINGER,  # in batches, after the gateway has answered
                deliver_new=True,
                description="cache: store the answers of remembered misses",
                **self.consumer_defaults(),
            )
        ]

    # --- lifecycle -------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return Path(self.cfg.data_dir) / name

    @classmethod
    def from_args(cls, cfg: OrchestraConfig, args: argparse.Namespace) -> Actor:
        """The model is built or checked before connecting: a bad model fails at once, NATS or not."""
        actor = cls(cfg)
        try:
            actor.load_model()
        except (CacheError, WeightsError) as exc:
            raise StartError(str(exc)) from exc
        return actor

    def load_model(self) -> None:
        semantic = self.cfg.cache.semantic
        if self.embedder is None and self.cfg.cache.enabled and semantic.enabled:
            self.embedder = Embedder.load(self.path(semantic.model_dir), threads=semantic.embed_threads)
        if self.verifier is None and self.cfg.cache.enabled and semantic.enabled and semantic.verifier:
            self.verifier = Verifier.load()

    async def on_start(self) -> None:
        cfg = self.cfg.cache
        try:
            if cfg.enabled and cfg.semantic.enabled:
                await asyncio.to_thread(self.load_model)
                self.index = await self._open_index()
            exact = await ExactStore.open(self.js)
            self.cache = ResponseCache(cfg, exact, self.index, self.embedder, verifier=self.verifier)
            await self.cache.load()
        except (CacheError, WeightsError) as exc:
            raise StartError(str(exc)) from exc
        self.every("sweep", max(1.0, min(60.0, float(cfg.ttl) / 4)), SweepTick)

    async def _open_index(self) -> VectorIndex:
        semantic = self.cfg.cache.semantic
        if semantic.qdrant_url:
            key = read_secret(semantic.qdrant_api_key) if semantic.qdrant_api_key else None
            self.log.info("semantic cache on Qdrant %s, collection %s", semantic.qdrant_url, semantic.collection)
            collection = f"{semantic.collection}_{VECTOR_SPACE}"  # one collection per vector space
            return await QdrantIndex.connect(url=semantic.qdrant_url, api_key=key, collection=collection)
        folder = self.path(semantic.qdrant_path)
        dropped = await asyncio.to_thread(drop_other_spaces, folder, VECTOR_SPACE)
        if dropped:
            self.log.info("the embedding model changed: dropped the vector index of %s", ", ".join(dropped))
        return await asyncio.to_thread(EmbeddedIndex.open, folder / VECTOR_SPACE)

    async def on_stop(self) -> None:
        for task in list(self._events):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 1.0)
        if self.cache is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cache.drain(), 2.0)  # the misses' pending puts still in flight
        if self.index is not None:
            await self.index.close()
        if self.embedder is not None:
            self.embedder.close()

    # --- messages --------------------------------------------------------------------------------
    async def handle(self, msg: CacheMsg) -> Any:
        """The one entry point; a service's message returns its reply."""
        match msg:
            case ResultStored(d=d):
                await self.store(d)
            case Lookup(msg=lookup):
                return await self.lookup(lookup)
            case Embed(msg=embed):
                return await self.embed(embed)
            case SweepTick():
                await self._sweep()
        return None

    async def _sweep(self) -> None:
        assert self.cache is not None
        try:
            removed = await self.cache.sweep()
        except StoreError as exc:
            self.log.warning("cache sweep failed: %s", exc)
            return
        if removed:
            self.log.debug("cache sweep removed %d expired entries", removed)

    # --- the service -----------------------------------------------------------------------------
    async def lookup(self, msg: CacheLookup) -> CacheReply:
        assert self.cache is not None
        try:
            reply = await self.cache.lookup(msg.request)
        except (CacheError, WeightsError) as exc:
            self.log.warning("cache lookup for %s failed: %s", msg.request.id, exc)
            raise ServiceCallError(ErrorInfo.of("unavailable", f"cache: {exc}")) from exc
        if reply.hit:
            self.log.debug("cache hit (%s, %.4f) for %s", reply.layer, reply.similarity or 0, msg.request.id)
            event = CacheHit(
                request_id=msg.request.id, layer=reply.layer or "exact", similarity=reply.similarity or 1.0
            )
            task = asyncio.create_task(self.emit(event))
            self._events.add(task)
            task.add_done_callback(self._events.discard)
        return reply

    async def embed(self, msg: EmbedRequest) -> EmbedReply:
        """/v1/embeddings: MiniLM vectors. A text longer than the model reads is refused, not truncated."""
        if self.embedder is None:
            raise ServiceCallError(ErrorInfo.of("unavailable", "embeddings need the cache's semantic layer"))
        for i, text in enumerate(msg.texts):
            if len(text) > MAX_FIT_CHARS:
                reason = f"longer than the {MAX_FIT_CHARS} characters {EMBED_MODEL} can read"
                raise ServiceCallError(ErrorInfo.of("bad_request", reason, field=f"input[{i}]"))
        counts = await self.embedder.count(list(msg.texts))
        for i, n in enumerate(counts):
            if n >= MAX_SEQ_LENGTH:  # the tokenizer truncates at the limit: reaching it means cut
                reason = f"longer than the {MAX_SEQ_LENGTH - 1} tokens {EMBED_MODEL} reads (it would be truncated)"
                raise ServiceCallError(ErrorInfo.of("bad_request", reason, field=f"input[{i}]"))
        try:
            vectors = await self.embedder.embed(list(msg.texts))
        except (CacheError, WeightsError) as exc:
            raise ServiceCallError(ErrorInfo.of("unavailable", f"cache: {exc}")) from exc
        return EmbedReply(vectors=vectors.tolist(), tokens=sum(counts))

    # --- results ---------------------------------------------------------------------------------
    async def store(self, d: Delivery) -> None:
        assert self.cache is not None
        outcome = OUTCOME.decode(d.data)
        try:
            match outcome:
                case GenerateResult():
                    what = await self.cache.store(outcome, published_at=d.published_at)
                    self.log.debug("result %s: %s", outcome.request_id, what)
                case GenerateError():
                    await self.cache.forget(outcome.request_id)
        except StoreError as exc:
            raise Transient(f"cache store unavailable: {exc}") from exc


def drop_other_spaces(folder: Path, space: str) -> list[str]:
    """Delete the embedded indexes of other model builds under ``folder`` (their vectors cannot be compared
    with this build's); the exact layer keeps their answers. Returns what was dropped. Blocking."""
    dropped = []
    legacy = sorted(folder.glob("index.sqlite3*"))  # build 1 kept its index directly in the folder
    if legacy:
        dropped.append("minilm_l6_v1")
    for path in legacy:
        path.unlink(missing_ok=True)
    for other in sorted(folder.glob("minilm_*")):
        if other.is_dir() and other.name != space:
            shutil.rmtree(other, ignore_errors=True)
            dropped.append(other.name)
    return dropped
