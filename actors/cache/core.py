"""The response cache itself: lookup and store over the exact store, the vector index and the embedder.

No bus code here (the actor wires it to NATS, the benchmark drives it directly). Lookup order:

    1. policy       decide() -> skip diverse/ensemble, sampled without opt-in, no_cache / no_store
    2. exact        one KV get by the exact key                              -> hit, similarity 1.0
    3. semantic     embed the normalised last user turn (while the exact get waits for its reply, unless
                    this instance stored the exact key: then it most likely hits), search its scope for
                    points at or above the verifier's cosine floor (the configured threshold when the
                    verifier is off), best first; the verifier (or, off, the hard refusals alone) must
                    accept the candidate, and its answer must still be in KV -> hit, similarity = cosine
    4. miss         remember the request (key, scope, vector) until its deadline; the final result
                    that appears on orch.result.<origin>.<id> is stored by ``store``. The reply does not
                    wait for that KV put: ``store`` and ``forget`` of the same request in this instance
                    wait for it instead, and ``drain`` at shutdown. (Another instance that consumes the
                    result before the put lands finds nothing to store: the answer is not cached, as
                    when the put fails, which is logged.)
    5. on its way   before a miss is answered: if a request of this instance with the same key, or one the
                    verifier accepts, is still waiting for its answer (inflight.py), wait up to
                    ``cache.coalesce_wait`` for it to be stored and answer from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

import msgspec
import numpy as np

from actors.cache import guard
from actors.cache.errors import StoreError
from actors.cache.exact import ExactStore
from actors.cache.index import IndexEntry, VectorIndex
from actors.cache.inflight import InFlight
from actors.cache.keys import RequestKeys, request_keys
from actors.cache.verifier import Verifier
from policy.caching import Lru, decide, storable
from schemas.cache import CacheEntry, CacheLayer, CacheReply, PendingStore
from schemas.config.actors import CacheCfg
from schemas.request import GenerateRequest
from schemas.result import GenerateResult, Timings, Usage
from weights.embedder import Embedder

log = logging.getLogger(__name__)

CANDIDATES = 4  # semantic candidates the verifier looks at, best first


def _retrieved(task: asyncio.Task[np.ndarray]) -> None:
    if not task.cancelled():
        task.exception()


class ResponseCache:
    def __init__(
        self,
        cfg: CacheCfg,
        exact: ExactStore,
        index: VectorIndex | None = None,
        embedder: Embedder | None = None,
        *,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.exact, self.index, self.embedder, self.clock = cfg, exact, index, embedder, clock
        self.semantic = cfg.semantic.enabled and index is not None and embedder is not None
        self.verifier = verifier if cfg.semantic.verifier else None
        self.threshold = self.verifier.floor if self.verifier is not None else float(cfg.semantic.threshold)
        self.ttl = float(cfg.ttl)
        self.lru = Lru(cfg.max_entries)
        self.stats: Counter[str] = Counter()
        self._remembering: dict[str, asyncio.Task[None]] = {}  # request id -> its pending put in flight
        self.inflight = InFlight()  # this instance's misses whose answers are on their way
        self.coalesce_wait = float(cfg.coalesce_wait)

    # --- start-up --------------------------------------------------------------------------------
    async def load(self) -> None:
        """Rebuild the LRU order from KV, evict past the cap, drop index points whose answer is gone."""
        items = [item async for item in self.exact.stored()]
        for victim in self.lru.load(items):
            await self._evict(victim)
        if self.index is not None:
            ids = await self.index.ids()
            if ids is not None:
                stale = ids - set(self.lru.keys())
                if stale:
                    await self.index.delete(sorted(stale))
                    log.info("dropped %d index points whose answers expired", len(stale))
        log.info("cache loaded: %d entries (cap %d)", len(self.lru), self.lru.cap)

    # --- lookup ----------------------------------------------------------------------------------
    async def lookup(self, req: GenerateRequest) -> CacheReply:
        started = time.perf_counter()
        decision = decide(req, enabled=self.cfg.enabled)
        if not (decision.lookup or decision.store):
            self.stats["skipped"] += 1
            return CacheReply(hit=False, reason=decision.reason)
        keys = request_keys(req, per_tenant=self.cfg.per_tenant)
        embedder = self.embedder if self.semantic and keys.text and keys.guard_text else None
        embeds = embedder is not None and embedder.fits(keys.text or "", self.cfg.semantic.max_tokens)
        # The exact get and the embedding run side by side, unless this instance stored the exact key (then
        # the get most likely hits and the model run would be wasted): a semantic lookup waits for one of
        # the two, not for both one after the other.
        early = self._embedding(keys.text) if embeds and not (decision.lookup and keys.key in self.lru) else None
        vector = None
        try:
            if decision.lookup:
                entry = await self._fresh(keys.key)
                if entry is not None:
                    return self._hit(req, entry, "exact", 1.0, started)
            if embeds:
                vector = (await (early or self._embedding(keys.text)))[0]
                if decision.lookup:
                    reply = await self.semantic_lookup(req, keys, vector, started)
                    if reply is not None:
                        return reply
        finally:
            if early is not None:
                early.cancel()  # an exact hit (stored by another instance) or a failed get: not needed
        if decision.lookup and self.coalesce_wait > 0:
            reply = await self._on_its_way(req, keys, vector, started)
            if reply is not None:
                return reply
        self.stats["misses"] += 1
        reason = decision.reason or "miss"
        if not decision.store:
            return CacheReply(hit=False, reason=reason)
        pending = PendingStore(
            request_id=req.id,
            key=keys.key,
            scope=keys.scope,
            guard_text=keys.guard_text if vector is not None else None,
            vector=vector.astype(np.float32).tobytes() if vector is not None else None,
            deadline=req.effective_deadline,
            at=self.clock(),
        )
        self.inflight.add(pending)
        task = self._remembering[req.id] = asyncio.ensure_future(self._remember(pending))
        task.add_done_callback(lambda _, rid=req.id: self._remembering.pop(rid, None))  # type: ignore[misc]
        return CacheReply(hit=False, remembered=True, reason=reason)

    async def _on_its_way(
        self, req: GenerateRequest, keys: RequestKeys, vector: np.ndarray | None, started: float
    ) -> CacheReply | None:
        """A miss that matches an answer on its way (inflight.py): wait for it a little, then look again."""

        def accepts(cached: str, cosine: float) -> bool:
            return keys.guard_text is not None and self._verdict(keys.guard_text, cached, cosine).ok

        found = self.inflight.match(req.id, keys.key, keys.scope, vector, accepts, self.threshold)
        if found is None:
            return None
        found.awaited.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(found.awaited.done.wait(), self.coalesce_wait)
        finally:
            found.awaited.waiting -= 1
        entry = await self._fresh(found.awaited.pending.key)
        if entry is None:
            return None
        self.stats["coalesced"] += 1
        layer: CacheLayer = "exact" if found.awaited.pending.key == keys.key else "semantic"
        return self._hit(req, entry, layer, found.similarity, started)

    def _verdict(self, query: str, cached: str, cosine: float) -> guard.Verdict:
        if self.verifier is not None:
            return self.verifier.check(query, cached, cosine)
        return guard.check(query, cached)

    async def _remember(self, pending: PendingStore) -> None:
        try:
            await self.exact.remember(pending)
        except StoreError as exc:
            self.stats["remember_failed"] += 1
            log.warning("cannot remember the miss %s (its answer will not be cached): %s", pending.request_id, exc)

    async def _settled(self, request_id: str) -> None:
        """Wait for this instance's put of the request's pending entry, if one is in flight."""
        task = self._remembering.get(request_id)
        if task is not None:
            await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for every pending put in flight (at shutdown)."""
        if self._remembering:
            await asyncio.gather(*list(self._remembering.values()), return_exceptions=True)

    def _embedding(self, text: str | None) -> asyncio.Task[np.ndarray]:
        assert self.embedder is not None and text is not None
        task = asyncio.ensure_future(self.embedder.embed([text]))
        task.add_done_callback(_retrieved)  # a model error nobody waits for (after an exact hit) is no warning
        return task

    async def semantic_lookup(
        self, req: GenerateRequest, keys: RequestKeys, vector: np.ndarray, started: float
    ) -> CacheReply | None:
        """The semantic layer alone, for a request whose prompt is already embedded."""
        assert self.index is not None and keys.guard_text is not None
        found = await self.index.search(
            keys.scope, vector, threshold=self.threshold, limit=CANDIDATES, now=self.clock()
        )
        for candidate in found:
            if candidate.text is None:
                continue
            verdict = self._verdict(keys.guard_text, candidate.text, candidate.score)
            if not verdict.ok:
                self.stats["guard_refused"] += 1
                log.debug(
                    "guard refused %s (%.3f) for %s: %s", candidate.id[:12], candidate.score, req.id, verdict.reason
                )
                continue
            entry = await self._fresh(candidate.id)
            if entry is None:
                await self.index.delete([candidate.id])
                continue
            return self._hit(req, entry, "semantic", candidate.score, started)
        return None

    async def _fresh(self, key: str) -> CacheEntry | None:
        entry = await self.exact.get(key)
        if entry is None:
            return None
        if entry.stored_at + self.ttl <= self.clock():
            self.lru.discard(key)
            return None
        self.lru.touch(key)
        return entry

    def _hit(
        self, req: GenerateRequest, entry: CacheEntry, layer: CacheLayer, similarity: float, started: float
    ) -> CacheReply:
        self.stats[f"hits_{layer}"] += 1
        similarity = round(min(1.0, similarity), 4)
        result = msgspec.structs.replace(
            entry.result,
            request_id=req.id,
            cached=True,
            similarity=similarity,
            cost_usd=0.0,
            usage=Usage(),
            target="cache",
            attempt=0,
            timings=Timings(total_ms=(time.perf_counter() - started) * 1000),
            client_key=req.client_key,
            task=req.task,
            parent_id=None,
            created_at=self.clock(),
        )
        return CacheReply(hit=True, result=result, layer=layer, similarity=similarity)

    # --- store -----------------------------------------------------------------------------------
    async def store(self, result: GenerateResult, *, published_at: float) -> str:
        """Store a final result whose request missed before. Returns what happened (for logs and tests)."""
        try:
            return await self._store(result, published_at)
        finally:
            self.inflight.settle(result.request_id)  # stored or not: lookups waiting for it look again

    async def _store(self, result: GenerateResult, published_at: float) -> str:
        why_not = storable(result)
        if why_not is not None:
            return f"not stored: {why_not}"
        if not result.cache_store:  # its miss was not remembered (no_store, sampled, ...): no pending entry
            self.stats["not_remembered"] += 1  # known from the result: no KV round trip
            return "not stored: not remembered"
        await self._settled(result.request_id)
        pending = await self.exact.pending_for(result.request_id)
        if pending is None:
            return "not stored: not remembered"
        if published_at > pending.deadline:
            await self.exact.forget(result.request_id)
            return "not stored: published after its deadline"
        now = self.clock()
        entry = CacheEntry(
            key=pending.key, scope=pending.scope, guard_text=pending.guard_text, result=result, stored_at=now
        )
        await self.exact.put(entry)
        if self.index is not None and pending.vector is not None and pending.guard_text is not None:
            vector = np.frombuffer(pending.vector, np.float32)
            await self.index.add(
                IndexEntry(
                    id=pending.key,
                    scope=pending.scope,
                    vector=vector,
                    text=pending.guard_text,
                    expires_at=now + self.ttl,
                )
            )
        for victim in self.lru.add(pending.key, now):
            await self._evict(victim)
        await self.exact.forget(result.request_id)
        self.stats["stored"] += 1
        return "stored"

    async def forget(self, request_id: str) -> None:
        """The request ended without an answer to keep."""
        self.inflight.settle(request_id)
        await self._settled(request_id)
        await self.exact.forget(request_id)

    async def _evict(self, key: str) -> None:
        self.stats["evicted"] += 1
        self.lru.discard(key)
        await self.exact.delete(key)
        if self.index is not None:
            await self.index.delete([key])

    async def sweep(self) -> int:
        """Forget entries past their TTL (KV drops them by itself; the index and the LRU order do not)."""
        now = self.clock()
        self.inflight.expire(now)
        expired = self.lru.expired(now, self.ttl)
        for key in expired:
            self.lru.discard(key)
        removed = 0
        if self.index is not None:
            if expired:
                await self.index.delete(expired)
            removed = await self.index.expire(now)
        return len(expired) + removed
