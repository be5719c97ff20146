"""The card group's state and its only writer: which models are loaded where, and every transition.

    mgr = ModelManager(host, cfg, library, emit=..., changed=...)
    loaded = await mgr.ensure_loaded("gemma3-270m")      # load (evicting by policy) or raise OutOfMemory
    await mgr.unload("gemma3-270m", reason="rotation")   # drains in-flight requests first
    await mgr.swap(unload=[...], load=[...])
    mgr.sweep()                                          # keep-alive expiry (warm TTL, cold when idle)
    mgr.state()                                          # HostState for KV

Loads and unloads run one at a time (a lock); requests to loaded models never wait for it. Every
transition publishes an event (model.loaded / model.unloaded / model.swap / model.keep_alive /
model.load_failed / oom). The records it keeps and builds (``Resident``, the engine, the host's KV
record, the oom) are in ``residents.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

from actors.gpu_host import devmem
from actors.gpu_host.devmem import DeviceMemory
from actors.gpu_host.engine import Engine
from actors.gpu_host.errors import HOST_ERRORS, GpuHostError, OutOfMemory
from actors.gpu_host.residents import (
    AllocationFailed,
    Resident,
    card_use,
    host_state,
    hot_models,
    make_engine,
    oom_of,
    usable_cards,
)
from policy import eviction, memory
from schemas.base import KeepAlive
from schemas.config.hosts import CardCfg
from schemas.config.models import LocalModel
from schemas.config.root import OrchestraConfig
from schemas.events import Event, ModelKeepAlive, ModelLoaded, ModelLoadFailed, ModelSwap, ModelUnloaded
from schemas.state import HostState
from weights.errors import ModelNotFound
from weights.library import ModelLibrary, ResolvedModel

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 60.0  # an unload waits this long for in-flight requests, then hands them back
FAILED_LOAD_HOLD_S = 5.0  # a load that failed is not retried for this long (requests fail fast)


class ModelManager:
    def __init__(
        self,
        host: str,
        cfg: OrchestraConfig,
        library: ModelLibrary,
        *,
        emit: Callable[[Event], Awaitable[None]],
        changed: Callable[[], None],
        devices: DeviceMemory | None = None,
    ) -> None:
        self.host, self.cfg, self.library = host, cfg, library
        self.devices = devices  # NVML readings of the CUDA cards; None: bookkeeping only
        self.hcfg = cfg.hosts[host]
        self.card_cfgs: dict[str, CardCfg] = {c: cfg.cards[c] for c in self.hcfg.cards}
        self.emit, self.changed = emit, changed
        self.residents: dict[str, Resident] = {}
        self.waiting: dict[str, int] = {}  # requests waiting for a model to load
        self.usage: dict[str, eviction.Usage] = {}  # kept across unloads: the eviction policy's memory
        self._failed: dict[str, tuple[float, GpuHostError | ModelNotFound]] = {}
        self._lock = asyncio.Lock()
        cpu = os.cpu_count() or 1
        self.n_threads = self.hcfg.n_threads or max(1, cpu // 2)
        self.n_threads_batch = self.hcfg.n_threads_batch or self.n_threads

    # --- queries -----------------------------------------------------------------------------------
    def cards(self, without: frozenset[str] = frozenset()) -> list[memory.Card]:
        """The cards as they are (``without``: as if those models were gone; ``residents.card_use``)."""
        return card_use(self.card_cfgs, self.residents.values(), without, self._reading)

    def _reading(self, card: CardCfg) -> devmem.Reading | None:
        if self.devices is None or card.device != "cuda":
            return None
        return self.devices.read(card.index)

    @property
    def measured(self) -> bool:
        return self.devices is not None and any(c.device == "cuda" for c in self.card_cfgs.values())

    def loaded(self, name: str) -> Resident | None:
        r = self.residents.get(name)
        return r if r is not None and not r.draining else None

    def touch(self, name: str) -> None:
        now = time.time()
        self.usage[name] = self.usage.get(name, eviction.Usage()).used(now)
        if name in self.residents:
            self.residents[name].usage = self.usage[name]

    def state(self, *, up: bool = True, started_at: float = 0.0) -> HostState:
        residents = list(self.residents.values())
        return host_state(self.host, residents, self.cards(), self.waiting, up=up, started_at=started_at)

    def configured_keep_alive(self, name: str) -> KeepAlive | None:
        model = self.cfg.models.get(name)
        return model.keep_alive if isinstance(model, LocalModel) else None

    def hot_models(self) -> list[str]:
        """Hot models this host loads at start (``residents.hot_models``)."""
        return hot_models(self.cfg, self.host)

    # --- transitions -------------------------------------------------------------------------------
    async def ensure_loaded(
        self,
        name: str,
        *,
        keep_alive: KeepAlive | None = None,
        reason: str = "request",
        admit: bool = False,
        max_bits: float | None = None,
    ) -> Resident:
        """The model, loaded. ``admit``: a request will run on it; it counts as in flight from this very
        moment (no await in between), so an unload that starts now waits for it (``Resident.release``).
        ``max_bits``: at most that precise; a model loaded more precisely is reloaded (after an OOM)."""
        if max_bits is not None:
            kept = await self._lower(name, max_bits, reason)
            keep_alive = keep_alive or kept  # the reload is kept as the model was
        r, previous = await self._ensure_loaded(name, keep_alive=keep_alive, reason=reason, max_bits=max_bits)
        if admit:
            r.admit()
        if previous is not None:
            log.info("%s: %s kept %s (was %s)", self.host, name, r.keep_alive, previous)
            await self.emit(
                ModelKeepAlive(host=self.host, model=name, keep_alive=r.keep_alive, previous=previous, reason=reason)
            )
        return r

    async def _lower(self, name: str, max_bits: float, reason: str) -> KeepAlive | None:
        """Unload the model when it is loaded more precisely than ``max_bits`` and a variant within it exists;
        the keep-alive it had (None when nothing was unloaded)."""
        async with self._lock:
            r = self.loaded(name)
            if r is None or r.plan.variant.bits <= max_bits:
                return None
            model = self.library.model(name)
            files = [model.bits] if model.source is not None else []
            if not any(b <= max_bits for b in [*files, *(v.bits for v in model.variants if v.source)]):
                return None  # nothing less precise to load: keep what serves
            self._failed.pop(name, None)
            why = f"{reason}: reload at {max_bits:g} bits or fewer"
            await self._unload(name, reason=why, drain_timeout=DRAIN_TIMEOUT_S)
            return r.keep_alive

    async def _ensure_loaded(
        self, name: str, *, keep_alive: KeepAlive | None, reason: str, max_bits: float | None = None
    ) -> tuple[Resident, KeepAlive | None]:
        """The resident, and its keep-alive before this call when the call changed it (else None)."""
        r = self.loaded(name)
        if r is not None:
            return r, self._keep(r, keep_alive)
        self.waiting[name] = self.waiting.get(name, 0) + 1
        self.changed()
        try:
            async with self._lock:
                r = self.loaded(name)
                if r is not None:
                    return r, self._keep(r, keep_alive)
                failed = self._failed.get(name)
                if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_HOLD_S:
                    raise failed[1]
                try:
                    return await self._load(name, keep_alive, reason, max_bits), None
                except HOST_ERRORS as exc:
                    self._failed[name] = (time.monotonic(), exc)
                    raise
        finally:
            self.waiting[name] -= 1
            self.changed()

    def _keep(self, r: Resident, keep_alive: KeepAlive | None) -> KeepAlive | None:
        """Keep a loaded model as asked; the keep-alive it had when that changed it, else None."""
        if keep_alive is None or keep_alive == r.keep_alive:
            return None
        previous, r.keep_alive = r.keep_alive, keep_alive
        self.changed()
        return previous

    async def _load(
        self, name: str, keep_alive: KeepAlive | None, reason: str, max_bits: float | None = None
    ) -> Resident:
        try:
            model = self.library.model(name)
            cards = usable_cards(self.host, name, model.cards, list(self.card_cfgs))
            files = await asyncio.to_thread(self.library.resolve_all, name)
        except ModelNotFound as exc:
            await self.emit(ModelLoadFailed(host=self.host, model=name, error=exc.to_info()))
            raise
        fallbacks: list[str] = []  # variants llama.cpp could not allocate, most precise first
        while True:
            try:
                return await self._load_variant(name, model, cards, files, keep_alive, reason, max_bits, fallbacks)
            except AllocationFailed as failed:
                # OOM remediation, first step: a lower-bit variant of the same model, before anything else
                lower = [f for f in files if f.variant.weights < failed.variant.weights]
                if not lower:
                    raise failed.oom from failed.__cause__
                fallbacks.append(f"{failed.variant.quant} failed to allocate ({failed.why[:200]})")
                log.warning("%s: %s; trying a lower-bit variant of %s", self.host, fallbacks[-1], name)
                files = lower

    async def _load_variant(
        self,
        name: str,
        model: LocalModel,
        cards: list[str],
        files: list[ResolvedModel],
        keep_alive: KeepAlive | None,
        reason: str,
        max_bits: float | None,
        fallbacks: list[str],
    ) -> Resident:
        pinned = bool(model.cards)
        # The best plan the cards allow once every evictable model is gone, then the fewest victims for it.
        now = time.time()
        residents = [self._policy_view(r) for r in self.residents.values()]
        movable = frozenset(r.name for r in residents if eviction.evictable(r))
        best = memory.plan(
            [f.variant for f in files],
            [c for c in self.cards(movable) if c.name in cards],
            kv_bytes_per_token=files[0].kv_bytes_per_token,
            context=model.context_length,
            max_batch=1 if model.engine == "ctransformers" else model.max_batch_size,
            overhead=int(self.hcfg.overhead),
            pinned=pinned,
            max_bits=max_bits,
        )
        if isinstance(best, memory.NoFit):
            detail = "; ".join([*fallbacks, best.reason])
            raise await self._oom(name, detail, best.card, best.requested, best.free, best.total)
        chosen = next(f for f in files if f.variant == best.variant)

        def fits(gone: frozenset[str]) -> bool:
            usable = [c for c in self.cards(gone) if c.name in cards]
            return memory.place(best.footprint, usable, pinned=pinned) is not None

        victims = eviction.choose_victims(residents, fits, now)
        if victims is None:  # pragma: no cover - the plan above was made with every evictable model gone
            raise await self._oom(name, "no room after eviction", best.placement.cards[0], best.bytes, 0, 0)
        for victim in victims:
            await self._unload(victim, reason=f"evicted for {name}")
        usable = [c for c in self.cards() if c.name in cards]
        placement = memory.place(best.footprint, usable, pinned=pinned)
        assert placement is not None
        plan = memory.Plan(best.variant, best.batch, best.context, best.footprint, placement, best.reason)
        engine = await self._start(name, chosen, plan, usable)
        return await self._loaded(name, chosen, engine, plan, keep_alive or model.keep_alive, reason, fallbacks)

    async def _start(self, name: str, chosen: ResolvedModel, plan: memory.Plan, usable: list[memory.Card]) -> Engine:
        """The engine, started on the cards of ``plan`` (``AllocationFailed``: llama.cpp could not allocate it)."""
        engine = make_engine(name, chosen, plan, self.card_cfgs, n_threads=self.n_threads, n_batch=self.n_threads_batch)
        try:
            await engine.start()
        except OutOfMemory as exc:
            free = sum(c.free for c in usable)
            cards, total = "+".join(plan.placement.cards), sum(c.total for c in usable)
            oom = await self._oom(name, str(exc), cards, plan.bytes, free, total, variant=plan.variant.quant)
            raise AllocationFailed(plan.variant, oom, str(exc)) from exc
        except GpuHostError as exc:
            await self.emit(ModelLoadFailed(host=self.host, model=name, error=exc.to_info()))
            raise
        return engine

    async def _loaded(
        self,
        name: str,
        chosen: ResolvedModel,
        engine: Engine,
        plan: memory.Plan,
        keep_alive: KeepAlive,
        reason: str,
        fallbacks: list[str],
    ) -> Resident:
        """Record the started engine as resident and announce it (model.loaded, with why this variant)."""
        load_ms = engine.load_s * 1000.0
        self.library.load_times.record(name, engine.load_s)
        r = Resident(
            name, chosen, engine, plan, keep_alive, time.time(), load_ms, usage=self.usage.get(name, eviction.Usage())
        )
        self.residents[name] = r
        self._failed.pop(name, None)
        why = "; ".join([*fallbacks, plan.reason]) + (" (device memory measured by NVML)" if self.measured else "")
        placement = plan.placement
        log.info(
            "%s: loaded %s (%s, batch %d, %.0f MB on %s) in %.0f ms: %s",
            self.host, name, plan.variant.quant, plan.batch, plan.bytes / 1e6, "+".join(placement.cards), load_ms, why,
        )  # fmt: skip
        await self.emit(
            ModelLoaded(host=self.host, model=name, cards=list(placement.cards), bytes=plan.bytes, load_ms=load_ms,
                        reason=reason, variant=plan.variant.quant, variant_reason=why[:1000])
        )  # fmt: skip
        self.changed()
        return r

    async def unload(self, name: str, *, reason: str = "command", drain_timeout: float = DRAIN_TIMEOUT_S) -> bool:
        async with self._lock:
            return await self._unload(name, reason=reason, drain_timeout=drain_timeout)

    async def _unload(self, name: str, *, reason: str, drain_timeout: float = 0.0) -> bool:
        """Stop taking requests for it, let in-flight ones finish (up to ``drain_timeout``), free it; what is
        left is handed back to the router (unavailable), never dropped."""
        r = self.residents.get(name)
        if r is None:
            return False
        r.draining = True
        self.changed()
        started = time.monotonic()
        if drain_timeout > 0:
            deadline = started + drain_timeout
            with contextlib.suppress(TimeoutError):  # requests handed the model, maybe not yet submitted
                await asyncio.wait_for(r.idle.wait(), drain_timeout)
            await r.engine.drain(max(0.0, deadline - time.monotonic()))
        drained = time.monotonic()
        await r.engine.stop()
        del self.residents[name]
        drain_ms, unload_ms = (drained - started) * 1000, (time.monotonic() - drained) * 1000
        log.info("%s: unloaded %s (%s) in %.0f ms after %.0f ms draining", self.host, name, reason, unload_ms, drain_ms)
        await self.emit(
            ModelUnloaded(
                host=self.host,
                model=name,
                bytes=r.plan.bytes,
                reason=reason,
                drain_ms=round(drain_ms, 1),
                unload_ms=round(unload_ms, 1),
            )
        )
        self.changed()
        return True

    async def swap(self, unload: list[str], load: list[str], *, reason: str = "command") -> float:
        started = time.monotonic()
        async with self._lock:
            for name in unload:
                await self._unload(name, reason=reason or "swap", drain_timeout=DRAIN_TIMEOUT_S)
        for name in load:
            await self.ensure_loaded(name, reason=reason or "swap")
        swap_ms = (time.monotonic() - started) * 1000.0
        await self.emit(ModelSwap(host=self.host, unloaded=unload, loaded=load, swap_ms=swap_ms, reason=reason))
        return swap_ms

    async def sweep(self) -> list[str]:
        """Unload what keep-alive says is no longer wanted (warm past its TTL, cold when idle)."""
        now = time.time()
        views = [self._policy_view(r) for r in self.residents.values() if not r.draining]
        gone = eviction.expired(views, now, lambda n: float(self.library.model(n).keep_alive_ttl))
        for name in gone:
            async with self._lock:
                r = self.residents.get(name)
                if r is not None and not r.busy:
                    await self._unload(name, reason=f"keep-alive ({r.keep_alive}) expired")
        return gone

    async def close(self, *, announce: bool = True) -> None:
        """Unload everything (the host is stopping); ``announce=False`` when NATS is gone: no events."""
        if not announce:
            self.emit = _no_event
        async with self._lock:
            for name in list(self.residents):
                await self._unload(name, reason="host stopping")

    # --- helpers -----------------------------------------------------------------------------------
    def _policy_view(self, r: Resident) -> eviction.Resident:
        return eviction.Resident(
            name=r.name,
            bytes_by_card=r.bytes_by_card,
            keep_alive=r.keep_alive,
            busy=r.busy or self.waiting.get(r.name, 0) > 0,
            usage=r.usage,
            load_s=self.library.load_times.get(r.name, r.load_ms / 1000.0),
            loaded_at=r.loaded_at,
        )

    async def _oom(
        self, name: str, detail: str, card: str, requested: int, free: int, total: int, *, variant: str = ""
    ) -> OutOfMemory:
        log.warning("%s: out of memory loading %s %s: %s", self.host, name, variant, detail)
        event, error = oom_of(self.host, name, detail, card, requested, free, total, variant=variant)
        await self.emit(event)
        return error


async def _no_event(event: Event) -> None:
    return None
