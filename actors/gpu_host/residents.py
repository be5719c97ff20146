"""What a card group holds, as data: the loaded model (``Resident``), how its engine is built, the host's
record for KV, which hot models a host loads at start, and the OOM it reports. The manager
(``manager.py``) owns the transitions; everything here is built from values it passes in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from actors.gpu_host import devmem
from actors.gpu_host.ctrans_engine import CTransformersEngine
from actors.gpu_host.engine import Engine, LoadSpec
from actors.gpu_host.errors import OutOfMemory
from actors.gpu_host.llama_engine import LlamaCppEngine
from policy import eviction, memory
from policy.memory import planned_kv_bytes_per_token, planned_variants
from schemas.base import KeepAlive
from schemas.config.hosts import CardCfg
from schemas.config.root import OrchestraConfig
from schemas.events import Event, Oom
from schemas.state import CardState, HostState, LoadedModel
from weights.errors import ModelNotFound
from weights.library import ResolvedModel


@dataclass
class Resident:
    name: str
    resolved: ResolvedModel
    engine: Engine
    plan: memory.Plan
    keep_alive: KeepAlive
    loaded_at: float
    load_ms: float
    usage: eviction.Usage = field(default_factory=eviction.Usage)
    draining: bool = False
    admitted: int = 0  # requests handed this model and not finished (an unload waits for them)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while admitted == 0

    def __post_init__(self) -> None:
        self.idle.set()

    def admit(self) -> None:
        self.admitted += 1
        self.idle.clear()

    def release(self) -> None:
        self.admitted = max(0, self.admitted - 1)
        if self.admitted == 0:
            self.idle.set()

    @property
    def bytes_by_card(self) -> dict[str, int]:
        return dict(zip(self.plan.placement.cards, self.plan.placement.per_card, strict=True))

    @property
    def busy(self) -> bool:
        """Requests handed it (``admitted``: maybe not yet submitted to the engine) or in the engine."""
        return self.admitted + self.engine.active + self.engine.queued > 0


class AllocationFailed(Exception):
    """llama.cpp could not allocate this variant (the oom event is out): try a smaller one."""

    def __init__(self, variant: memory.Variant, oom: OutOfMemory, why: str) -> None:
        super().__init__(str(oom))
        self.variant, self.oom, self.why = variant, oom, why


def card_use(
    card_cfgs: dict[str, CardCfg],
    residents: Iterable[Resident],
    without: frozenset[str],
    reading: Callable[[CardCfg], devmem.Reading | None],
) -> list[memory.Card]:
    """The cards as they are (``without``: as if those models were gone). On CUDA cards with NVML the
    use the device reports (``reading``) counts when it is larger than the bookkeeping (another process's memory)."""
    booked: dict[str, int] = {}
    kept: dict[str, int] = {}
    for r in residents:
        for card, n in r.bytes_by_card.items():
            booked[card] = booked.get(card, 0) + n
            if r.name not in without:
                kept[card] = kept.get(card, 0) + n
    out = []
    for name, c in card_cfgs.items():
        total, used = devmem.reconcile(booked=booked.get(name, 0), reading=reading(c), budget=int(c.memory))
        foreign = used - booked.get(name, 0)  # memory this host did not book: not freed by its unloads
        out.append(memory.Card(name, total, kept.get(name, 0) + foreign))
    return out


def usable_cards(host: str, name: str, pinned: list[str], owned: list[str]) -> list[str]:
    """The cards of this host a model may use: all of them, or those it is pinned to (all owned here)."""
    if not pinned:
        return list(owned)
    missing = [c for c in pinned if c not in owned]
    if missing:
        raise ModelNotFound(f"model {name!r} is pinned to cards {pinned}; host {host!r} does not own {missing}")
    return list(pinned)


def make_engine(
    name: str, m: ResolvedModel, plan: memory.Plan, card_cfgs: dict[str, CardCfg], *, n_threads: int, n_batch: int
) -> Engine:
    """The engine that runs ``m`` as ``plan`` places it (``n_batch``: threads for prompt batches)."""
    card = card_cfgs[plan.placement.cards[0]]
    split = None
    if plan.placement.tensor_split:
        by_index = {
            card_cfgs[c].index: s for c, s in zip(plan.placement.cards, plan.placement.tensor_split, strict=True)
        }
        split = tuple(by_index.get(i, 0.0) for i in range(max(by_index) + 1))
    spec = LoadSpec(
        name=name,
        path=m.path,
        context=m.cfg.context_length,
        batch=plan.batch,
        n_threads=n_threads,
        n_threads_batch=n_batch,
        device=card.device,
        n_gpu_layers=m.cfg.n_gpu_layers,
        main_gpu=card.index,
        tensor_split=split,
        model_type=m.cfg.model_type,
        chat_format=m.cfg.chat_format,
    )
    if m.cfg.engine == "ctransformers":
        return CTransformersEngine(spec)
    return LlamaCppEngine(spec)


def host_state(
    host: str,
    residents: list[Resident],
    cards: list[memory.Card],
    waiting: dict[str, int],
    *,
    up: bool,
    started_at: float,
) -> HostState:
    """The host's record in KV ``orch_hosts`` (``waiting``: requests waiting for a model to load)."""
    models = [
        LoadedModel(
            model=r.name,
            bytes=r.plan.bytes,
            cards=list(r.plan.placement.cards),
            keep_alive=r.keep_alive,
            loaded_at=r.loaded_at,
            last_used=r.usage.last_used,
            in_flight=r.engine.active,
            queue_depth=r.engine.queued + waiting.get(r.name, 0),
            tokens_per_s=round(r.engine.tokens_per_s, 2),
            load_ms=round(r.load_ms, 1),
            draining=r.draining,
            card_bytes=list(r.plan.placement.per_card),
            variant=r.plan.variant.quant,
            bits=r.plan.variant.bits,
        )
        for r in residents
    ]
    return HostState(
        host=host,
        up=up,
        cards=[CardState(card=c.name, total_bytes=c.total, used_bytes=c.used) for c in cards],
        models=models,
        heartbeat_at=time.time(),
        started_at=started_at,
    )


def hot_models(cfg: OrchestraConfig, host: str) -> list[str]:
    """Hot models this host loads at start: those pinned to its cards, and unpinned ones when it is the
    first host (in hosts.yaml order) whose cards can hold them."""
    out = []
    own = set(cfg.hosts[host].cards)
    for name, m in cfg.local_models().items():
        if m.keep_alive != "hot" or m.source is None:
            continue
        if m.cards:
            if set(m.cards) <= own:
                out.append(name)
            continue
        holder = next((h for h in cfg.hosts if can_hold(cfg, h, name)), None)
        if holder == host:
            out.append(name)
    return out


def can_hold(cfg: OrchestraConfig, host: str, name: str) -> bool:
    """Whether a host's cards could hold a model at all, from the library's description (no file needed)."""
    model = cfg.local_models()[name]
    hcfg = cfg.hosts[host]
    cards = [memory.Card(c, int(cfg.cards[c].memory)) for c in hcfg.cards]
    plan = memory.plan(
        planned_variants(model),
        cards,
        kv_bytes_per_token=planned_kv_bytes_per_token(model),
        context=model.context_length,
        max_batch=1,
        overhead=int(hcfg.overhead),
    )
    return isinstance(plan, memory.Plan)


def oom_of(
    host: str, name: str, detail: str, card: str, requested: int, free: int, total: int, *, variant: str = ""
) -> tuple[Event, OutOfMemory]:
    """The ``oom`` event to publish and the error to raise (``variant``: the one that could not be allocated)."""
    event = Oom(
        host=host,
        card=card,
        model=name,
        requested_bytes=requested,
        free_bytes=free,
        total_bytes=total,
        detail=detail[:1000],
        variant=variant,
    )
    error = OutOfMemory(
        f"model {name!r} does not fit on {card}: {detail}",
        model=name,
        card=card,
        requested_bytes=requested,
        free_bytes=free,
        total_bytes=total,
    )
    return event, error
