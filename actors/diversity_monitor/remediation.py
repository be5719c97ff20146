"""Auto-remediation plans, pure (the paper's AlertHandler, §10.2): functions of plain state that return
the commands to send. The actor sends them and records a ``Remediation`` event with the alert.

    plan_oom(ooms, hosts, cfg)                    the largest model on the card that ran out of memory:
                                                  reload it at a lower-bit variant when it has one (Mirador's
                                                  adaptive quantisation), else unload it and load a smaller
                                                  model of its family that fits
    plan_backlog(queues, hosts, tiers, cfg, now)  load a fast model where memory allows, otherwise
                                                  overflow local work to the Together tier
    plan_cost_spike(tiers, cfg, daily_usd, until) disable the premium tier unless it is already off
    plan_for(action, rule, now, why, ...)         the plan of an alert's action, from the monitor's windows

"Fits" is the paper's 16 GB rule generalised: a host's free memory (the sum over its cards, from its
HostState) must hold the model's library size (the variant the library keeps by default) plus the
host's per-model overhead. A model pinned to cards (``cards:``) only goes to the host that owns them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from actors.diversity_monitor.window import LiveState, Observations, OomRec
from policy.memory import (
    Variant,
    allowed_variants,
    loadable_variants,
    planned_kv_bytes_per_token,
    planned_variants,
    precision_order,
)
from schemas.base import Tier
from schemas.commands import Command, LoadModel, SetOverflow, SetTier, UnloadModel
from schemas.config.models import LocalModel
from schemas.config.ops import AlertRuleCfg
from schemas.config.root import OrchestraConfig
from schemas.state import HostState, LoadedModel, QueueState, TierState

_SIZE = re.compile(r"-\d+(?:\.\d+)?[kmbt](?=-|$)", re.I)


@dataclass(frozen=True)
class Plan:
    action: str  # what was decided: "lower_variant", "swap", "load_fast_model", "overflow", "disable_tier", "none"
    commands: list[Command] = field(default_factory=list)
    detail: str = ""


def footprint(model: LocalModel) -> int:
    """Bytes a model takes loaded at batch 1: the weights of its smallest allowed variant plus the KV
    cache for its whole context, estimated from the library exactly as the gpu_host plans a load
    (weights alone would call a model with a huge context small)."""
    weights = min(v.weights for v in allowed_variants(planned_variants(model)))
    return weights + planned_kv_bytes_per_token(model) * model.context_length


def line_of(name: str) -> tuple[str, str]:
    """A model's line and variant around its size: 'llama3.1-70b' -> ('llama3.1', ''),
    'llama3.1-8b-instruct' -> ('llama3.1', '-instruct'), 'qwen2.5-coder-14b' -> ('qwen2.5-coder', '')."""
    m = _SIZE.search(name)
    return (name[: m.start()], name[m.end() :]) if m else (name, "")


def free_bytes(host: HostState) -> int:
    return sum(max(0, c.free_bytes) for c in host.cards)


def may_place(model: LocalModel, host: str, cfg: OrchestraConfig) -> bool:
    """Pinned models go only to the host owning their cards; reserved cards never take inference."""
    host_cfg = cfg.hosts.get(host)
    if model.cards:
        return host_cfg is not None and set(model.cards) <= set(host_cfg.cards)
    return True


def overhead(host: str, cfg: OrchestraConfig) -> int:
    host_cfg = cfg.hosts.get(host)
    return int(host_cfg.overhead) if host_cfg else 0


def _loaded_bytes(m: LoadedModel, cfg: OrchestraConfig) -> int:
    if m.bytes:
        return m.bytes
    model = cfg.models.get(m.model)
    return footprint(model) if isinstance(model, LocalModel) else 0


def plan_for(
    action: str,
    rule: AlertRuleCfg | None,
    now: float,
    why: str,
    *,
    cfg: OrchestraConfig,
    obs: Observations,
    live: LiveState,
    horizon: float,
    overflowing: set[str],
) -> Plan:
    """The remediation of an alert's ``action`` now: OOMs of the rule's window (else the monitor's horizon),
    the backlogged queues (else the deepest), today's spend; ``overflowing``: models overflowed already."""
    if action == "oom":
        windows = [float(c.window) for c in rule.when if c.metric == "oom_errors" and c.window] if rule else []
        ooms = obs.oom_records(now - (windows[0] if windows else horizon), now)
        return plan_oom(ooms, live.hosts, cfg)
    if action == "backlog":
        queues = live.current_queues(now)
        backlogged = [q for q in queues if q.backlog] or sorted(queues, key=lambda q: -q.depth)[:1]
        up = {h.host: h for h in live.hosts_up(now)}
        return plan_backlog(backlogged, up, live.tiers, cfg, now, overflowing)
    if action == "cost_spike":
        until = obs.next_day_start(now) if cfg.budgets.spike.reenable == "next_day" else None
        return plan_cost_spike(live.tiers, cfg, obs.daily_spend(now), until, why)
    return Plan("none", detail=f"no remediation for action {action!r}")


# --- OOM -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Victim:
    name: str
    bytes: int
    loaded: LoadedModel | None  # as its host reports it; None: named by the OOMs only (no live state)


def plan_oom(ooms: Sequence[OomRec], hosts: dict[str, HostState], cfg: OrchestraConfig) -> Plan:
    """The card with the most OOMs in the window (the latest on a tie): unload its largest model, and
    load a smaller model of the same family that fits the memory it frees: the same model line and
    variant first, then the largest (llama3.1-70b -> llama3.1-8b, as in the paper)."""
    if not ooms:
        return Plan("none", detail="no OOM in the window to act on")
    counts = Counter((o.host, o.card) for o in ooms)
    latest = {(o.host, o.card): o.at for o in ooms}
    host_name, card = max(counts, key=lambda k: (counts[k], latest[k]))
    state = hosts.get(host_name)
    victim = _victim(ooms, state, host_name, card, cfg)
    if victim is None:
        return Plan("none", detail=f"host {host_name} reports no loaded model to unload")
    where = f"{host_name}" + (f" card {card}" if card else "")
    why = f"{counts[(host_name, card)]} OOM(s) on {where}"
    victim_cfg = cfg.models.get(victim.name)
    was = victim.loaded
    lower = lower_variant(was, victim_cfg) if was is not None and isinstance(victim_cfg, LocalModel) else None
    if lower is not None and was is not None:  # the same model at fewer bits frees memory and keeps what it serves
        reload = LoadModel(
            host=host_name, model=victim.name, max_bits=lower.bits, reason=f"lower-bit variant after {why}"
        )
        return Plan(
            "lower_variant",
            [reload],
            f"reloading {victim.name} at {lower.quant} ({lower.bits:g} bits, was {was.variant} "
            f"at {was.bits:g}) on {where}",
        )
    commands: list[Command] = [UnloadModel(host=host_name, model=victim.name, reason=why)]
    if not isinstance(victim_cfg, LocalModel):
        return Plan("unload", commands, f"unloaded {victim.name} from {where}")
    name = _smaller(victim, victim_cfg, state, host_name, ooms, cfg)
    if name is None:
        return Plan(
            "unload", commands, f"unloaded {victim.name} from {where}; no smaller {victim_cfg.family} model fits"
        )
    commands.append(LoadModel(host=host_name, model=name, reason=f"smaller {victim_cfg.family} model after OOM"))
    return Plan("swap", commands, f"replaced {victim.name} with {name} on {where}")


def _victim(
    ooms: Sequence[OomRec], state: HostState | None, host_name: str, card: str, cfg: OrchestraConfig
) -> _Victim | None:
    """The largest model on the card (or on the host), or, with no live state, the model the OOMs name."""
    loaded = list(state.models) if state else []
    on_card = [m for m in loaded if not card or not m.cards or card in m.cards] or loaded
    if on_card:
        victim = max(on_card, key=lambda m: (_loaded_bytes(m, cfg), m.model))
        return _Victim(victim.model, _loaded_bytes(victim, cfg), victim)
    named = Counter(o.model for o in ooms if o.host == host_name and o.card == card and o.model)
    if not named:
        return None
    name = named.most_common(1)[0][0]
    lib = cfg.models.get(name)
    return _Victim(name, footprint(lib) if isinstance(lib, LocalModel) else 0, None)


def _smaller(
    victim: _Victim,
    victim_cfg: LocalModel,
    state: HostState | None,
    host_name: str,
    ooms: Sequence[OomRec],
    cfg: OrchestraConfig,
) -> str | None:
    """A smaller model of the victim's family that fits the memory its unload frees: the same line and
    variant first, then the largest."""
    room = (free_bytes(state) if state else 0) + victim.bytes
    loaded_names = {m.model for m in state.models} if state else set()
    failing = {o.model for o in ooms if o.host == host_name}  # never "fix" an OOM with the model that caused it
    candidates = [
        (name, m)
        for name, m in cfg.local_models().items()
        if m.family == victim_cfg.family
        and name != victim.name
        and name not in loaded_names
        and name not in failing
        and footprint(m) < footprint(victim_cfg)
        and footprint(m) + overhead(host_name, cfg) <= room
        and may_place(m, host_name, cfg)
    ]
    if not candidates:
        return None
    stem, variant = line_of(victim.name)

    def preference(c: tuple[str, LocalModel]) -> tuple[bool, bool, int, int, int]:
        c_stem, c_variant = line_of(c[0])
        return c_stem == stem, c_variant == variant, footprint(c[1]), c[1].quality, -len(c[0])

    return max(candidates, key=preference)[0]


def lower_variant(loaded: LoadedModel, model: LocalModel) -> Variant | None:
    """The most precise variant with a file below what is loaded (which the host reports), or None: a host
    that does not say which variant it loaded, or a model without a smaller file."""
    if not loaded.variant or loaded.bits <= 0:
        return None
    files = allowed_variants(loadable_variants(model))
    lower = [v for v in files if v.bits < loaded.bits and v.quant != loaded.variant]
    return precision_order(lower)[0] if lower else None


# --- backlog -------------------------------------------------------------------------------------
def fast_models(cfg: OrchestraConfig) -> list[str]:
    """The rotator's scale-up models first, then models marked fast-inference (fastest first)."""
    local = cfg.local_models()
    first = [m for m in cfg.rotator.scale.scale_up_models if m in local]
    rest = sorted(
        (n for n, m in local.items() if "fast-inference" in m.specialisations and n not in first),
        key=lambda n: (-(local[n].speed_tps or 0.0), footprint(local[n]), n),
    )
    return first + rest


def plan_backlog(
    queues: Sequence[QueueState],
    hosts: dict[str, HostState],
    tiers: dict[str, TierState],
    cfg: OrchestraConfig,
    now: float,
    overflowing: set[str] | None = None,
) -> Plan:
    """Load another fast model on the host with the most free memory that holds it; when none does,
    route local work of the backlogged models (all local work if the backlog is elsewhere) to Together
    (premium if Together is switched off). ``overflowing``: models already overflowed ('*' = all)."""
    local = cfg.local_models()
    worst = sorted(queues, key=lambda q: (-q.depth, -q.oldest_wait_s))
    backlog_models = sorted({q.target.split(":", 2)[2] for q in worst if q.target.startswith("local:")} & set(local))
    up = [h for h in hosts.values() if h.up]
    for name in fast_models(cfg):
        model = local[name]
        need = footprint(model)
        fitting = [h for h in up if may_place(model, h.host, cfg) and need + overhead(h.host, cfg) <= free_bytes(h)]
        if fitting:
            host = max(fitting, key=lambda h: (free_bytes(h), h.host))
            have = sum(1 for m in host.models if m.model == name)
            reason = f"queue backlog ({worst[0].target}: {worst[0].depth} pending)" if worst else "queue backlog"
            cmd = LoadModel(host=host.host, model=name, instances=have + 1, reason=reason)
            return Plan(
                "load_fast_model",
                [cmd],
                f"loaded {name} ({need / 1e9:g} GB) on {host.host} ({free_bytes(host) / 1e9:g} GB free)",
            )
    tier = _overflow_tier(tiers)
    if tier is None:
        return Plan("none", detail="no host has memory for a fast model and the cloud tiers are disabled")
    done = overflowing or set()
    targets: list[str | None] = [m for m in backlog_models if m not in done] if backlog_models else [None]
    if not targets or "*" in done:
        return Plan("none", detail="local work is already overflowing to the cloud")
    commands: list[Command] = [
        SetOverflow(model=m, enabled=True, tier=tier, reason="queue backlog, no memory for another model")
        for m in targets
    ]
    what = ", ".join(m or "all local models" for m in targets)
    return Plan("overflow", commands, f"no host has memory for a fast model: overflow of {what} to {tier}")


def _overflow_tier(tiers: dict[str, TierState]) -> Tier | None:
    order: tuple[Tier, ...] = ("together", "premium")
    for tier in order:
        state = tiers.get(tier)
        if state is None or state.enabled:
            return tier
    return None


def undo_overflow(commands: Sequence[Command]) -> list[Command]:
    """When the backlog alert resolves: switch off the overflow this alert switched on."""
    return [
        SetOverflow(model=c.model, enabled=False, tier=c.tier, reason="queue backlog resolved")
        for c in commands
        if isinstance(c, SetOverflow) and c.enabled
    ]


# --- cost spike ----------------------------------------------------------------------------------
def plan_cost_spike(
    tiers: dict[str, TierState], cfg: OrchestraConfig, daily_usd: float, until: float | None, why: str = ""
) -> Plan:
    """Disable the expensive tier (budgets.spike.disable_tier, premium by default) until ``until``
    (the next day, or None for manual re-enabling), unless the budget_guard switched it off already.
    ``why``: the reason when it is not the spend itself (an unacknowledged critical alert)."""
    tier = cfg.budgets.spike.disable_tier
    state = tiers.get(tier)
    if state is not None and not state.enabled:
        return Plan("none", detail=f"the {tier} tier is already disabled ({state.reason or 'no reason given'})")
    reason = why or f"cost spike: ${daily_usd:.2f} spent today"
    cmd = SetTier(tier=tier, enabled=False, until=until, reason=reason)
    return Plan("disable_tier", [cmd], f"disabled the {tier} tier: {reason}")
