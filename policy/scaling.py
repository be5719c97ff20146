"""Queue-depth scaling (the paper's §5.2), pure: time and state are passed in, decisions come out.

    depths(hosts, queues, now)                      -> {model: pending requests}
    observe(state, depths, now, cfg)                   the backlog / idle clocks
    decide(state, cfg, now, depths, hosts, tiers, overflowing, wanted) -> [Decision]
    record(state, decision, now)                       after the decision was carried out

A model's depth is the larger of what its gpu_hosts report (requests queued for it, waiting for it to
load) and what the router reports in ``orch_queues`` (dispatched and unfinished). When it stays over
``rotator.scale.queue_depth`` for ``sustained``, one step up the ladder is taken, then the clock starts
again (so a backlog that persists climbs the ladder one step per ``sustained``):

1. another instance of the model on an up host that can hold it in its free memory (nothing is evicted
   for scaling; on the same host the gpu_host's batched instance already serves every request);
2. else a fast small model of ``scale_up_models`` where a card has room (new ``auto`` work prefers it:
   the router puts backlogged targets last);
3. else — or when ``max_extra_instances`` extras already run for the model — overflow: ``SetOverflow``
   sends the model's local work to Together (premium when Together is switched off).

When the model's depth stays at or under ``idle_depth`` for ``idle_for``, what scaling did is undone: each
extra it loaded for the model is unloaded once the extra itself is idle, and the overflow it switched on
is switched off. Scaling never unloads a model it did not load, never switches off an overflow it did not
switch on, and leaves alone a model that the phase wants (a rotation may adopt an extra).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from policy import memory
from policy.memory import planned_kv_bytes_per_token
from policy.planner import host_is_up, loadable_variants, may_hold
from schemas.base import Tier
from schemas.config.models import LocalModel
from schemas.config.root import OrchestraConfig
from schemas.state import HostState, QueueState, TierState

QUEUE_FRESH_S = 10.0  # a router's QueueState older than this is not trusted


@dataclass(frozen=True)
class Extra:
    host: str
    model: str
    for_model: str
    at: float


@dataclass
class ScaleState:
    over_since: dict[str, float] = field(default_factory=dict)  # model -> over queue_depth since
    idle_since: dict[str, float] = field(default_factory=dict)  # model -> at or under idle_depth since
    extras: dict[tuple[str, str], Extra] = field(default_factory=dict)  # (host, model) -> what scaling loaded
    overflowing: dict[str, Tier] = field(default_factory=dict)  # models whose overflow scaling switched on


@dataclass(frozen=True)
class Decision:
    action: Literal["up", "down", "overflow_on", "overflow_off"]
    model: str  # the model loaded / unloaded, or overflowed
    for_model: str  # the backlogged model it is for
    host: str | None = None
    tier: Tier | None = None
    reason: str = ""
    placement: memory.Placement | None = None  # up: where it will sit


def adopted(e: Extra, hosts: Mapping[str, HostState], wanted: Collection[str]) -> bool:
    """An extra the phase now counts as its own: a wanted model with no other instance on any host."""
    if e.model not in wanted:
        return False
    return not any(m.model == e.model for h, s in hosts.items() if h != e.host for m in s.models)


def depths(hosts: Mapping[str, HostState], queues: Mapping[str, QueueState], now: float) -> dict[str, int]:
    by_host: dict[str, int] = {}
    for state in hosts.values():
        for m in state.models:
            by_host[m.model] = by_host.get(m.model, 0) + m.queue_depth
    by_router: dict[str, int] = {}
    for q in queues.values():
        parts = q.target.split(":", 2)
        if len(parts) == 3 and parts[0] == "local" and now - q.updated_at <= QUEUE_FRESH_S:
            by_router[parts[2]] = by_router.get(parts[2], 0) + q.depth
    return {m: max(by_host.get(m, 0), by_router.get(m, 0)) for m in set(by_host) | set(by_router)}


def observe(state: ScaleState, depth: Mapping[str, int], now: float, cfg: OrchestraConfig) -> None:
    scale = cfg.rotator.scale
    watched = set(depth) | set(state.over_since) | set(state.idle_since) | set(state.overflowing)
    watched |= {e.for_model for e in state.extras.values()} | {e.model for e in state.extras.values()}
    for model in watched:
        d = depth.get(model, 0)
        if d > scale.queue_depth:
            state.over_since.setdefault(model, now)
        else:
            state.over_since.pop(model, None)
        if d <= scale.idle_depth:
            state.idle_since.setdefault(model, now)
        else:
            state.idle_since.pop(model, None)


def overflow_tier(tiers: Mapping[str, TierState], now: float) -> Tier | None:
    order: tuple[Tier, ...] = ("together", "premium")
    for tier in order:
        t = tiers.get(tier)
        if t is None or t.enabled or (t.until is not None and t.until <= now):
            return tier
    return None


def _fits(cfg: OrchestraConfig, state: HostState, model: LocalModel) -> memory.Plan | None:
    """Whether the model fits the host's free memory as it is now (scaling never evicts)."""
    hcfg = cfg.hosts[state.host]
    live = {c.card: c.used_bytes for c in state.cards}
    names = list(model.cards) or list(hcfg.cards)
    cards = [memory.Card(c, int(cfg.cards[c].memory), live.get(c, 0)) for c in names]
    found = memory.plan(
        loadable_variants(model),
        cards,
        kv_bytes_per_token=planned_kv_bytes_per_token(model),
        context=model.context_length,
        max_batch=1 if model.engine == "ctransformers" else model.max_batch_size,
        overhead=int(hcfg.overhead),
        pinned=bool(model.cards),
    )
    return found if isinstance(found, memory.Plan) else None


def _room_for(
    cfg: OrchestraConfig, name: str, hosts: Mapping[str, HostState], now: float
) -> tuple[str, memory.Plan] | None:
    """The up host with the most free memory that does not hold the model and has room for it."""
    model = cfg.local_models().get(name)
    if model is None or model.source is None:
        return None
    options = []
    for host, state in hosts.items():
        if not host_is_up(cfg, state, now) or not may_hold(cfg, host, model):
            continue
        if any(m.model == name for m in state.models):
            continue
        fit = _fits(cfg, state, model)
        if fit is not None:
            free = sum(c.free_bytes for c in state.cards)
            options.append((free, host, fit))
    if not options:
        return None
    _, host, fit = max(options, key=lambda o: (o[0], o[1]))
    return host, fit


def decide(
    state: ScaleState,
    cfg: OrchestraConfig,
    now: float,
    depth: Mapping[str, int],
    hosts: Mapping[str, HostState],
    tiers: Mapping[str, TierState],
    overflowing: Collection[str],
    wanted: Collection[str],
) -> list[Decision]:
    """What to do now. ``overflowing``: models (or '*') whose work overflows already, by anyone's command."""
    scale = cfg.rotator.scale
    local = cfg.local_models()
    out: list[Decision] = []
    for model, since in sorted(state.over_since.items(), key=lambda kv: -depth.get(kv[0], 0)):
        if model not in local or now - since < float(scale.sustained):
            continue
        why = f"backlog on {model}: {depth.get(model, 0)} pending > {scale.queue_depth} for {now - since:.0f}s"
        extras = sum(1 for e in state.extras.values() if e.for_model == model)
        if extras < scale.max_extra_instances:
            found = _room_for(cfg, model, hosts, now)
            if found is not None:
                host, fit = found
                reason = f"{why}: another instance"
                out.append(Decision("up", model, model, host, reason=reason, placement=fit.placement))
                continue
            fast = [s for s in scale.scale_up_models if s != model and s in local]
            fresh = [s for s in fast if not any(m.model == s for h in hosts.values() for m in h.models)]
            for candidate in fresh + [s for s in fast if s not in fresh]:
                found = _room_for(cfg, candidate, hosts, now)
                if found is not None:
                    host, fit = found
                    out.append(Decision("up", candidate, model, host, reason=f"{why}: fast model {candidate}",
                                        placement=fit.placement))  # fmt: skip
                    break
            else:
                found = None
            if found is not None:
                continue
        if model in overflowing or "*" in overflowing:
            continue
        tier = overflow_tier(tiers, now)
        if tier is not None:
            room = "no room for another model" if extras < scale.max_extra_instances else f"{extras} extras run"
            out.append(Decision("overflow_on", model, model, tier=tier, reason=f"{why}: {room}, overflow to {tier}"))
    for extra in list(state.extras.values()):
        held = hosts.get(extra.host)
        if held is None or not any(m.model == extra.model for m in held.models) or adopted(extra, hosts, wanted):
            continue  # gone already, or adopted by the phase: forget() drops it
        idle_for = float(scale.idle_for)
        calm = now - state.idle_since.get(extra.for_model, now) >= idle_for
        own_idle = now - state.idle_since.get(extra.model, now) >= idle_for or extra.model == extra.for_model
        if calm and own_idle and now - extra.at >= idle_for:
            reason = f"{extra.for_model} at or under {scale.idle_depth} pending for {idle_for:.0f}s"
            out.append(Decision("down", extra.model, extra.for_model, extra.host, reason=reason))
    for model, tier in state.overflowing.items():
        if now - state.idle_since.get(model, now) >= float(scale.idle_for):
            reason = f"{model} at or under {scale.idle_depth} pending for {float(scale.idle_for):.0f}s"
            out.append(Decision("overflow_off", model, model, tier=tier, reason=reason))
    return out


def forget(state: ScaleState, hosts: Mapping[str, HostState], wanted: Collection[str]) -> list[Extra]:
    """Extras that are gone (unloaded by someone else, their host restarted) or that the phase now wants."""
    gone = [
        e
        for e in state.extras.values()
        if adopted(e, hosts, wanted)
        or e.host not in hosts
        or (not any(m.model == e.model for m in hosts[e.host].models) and e.at < hosts[e.host].heartbeat_at)
    ]
    for e in gone:
        state.extras.pop((e.host, e.model), None)
    return gone


def record(state: ScaleState, d: Decision, now: float) -> None:
    match d.action:
        case "up":
            assert d.host is not None
            state.extras[(d.host, d.model)] = Extra(d.host, d.model, d.for_model, now)
            state.over_since[d.for_model] = now  # the next step up needs another sustained backlog
        case "down":
            state.extras.pop((d.host or "", d.model), None)
        case "overflow_on":
            assert d.tier is not None
            state.overflowing[d.model] = d.tier
            state.over_since[d.for_model] = now
        case "overflow_off":
            state.overflowing.pop(d.model, None)
