"""What the orchestra can serve a request with, and in what order: pure, plain data in and out.

    Snapshot                          what the router knows of the orchestra right now
    allowed_tiers(request, cfg, snap) the tiers a request may use now, in preference order
    eligible(request, cfg, snap, ...) every (target, loaded) that passes the request's requirements
    rank(items, strategy, ...)        the paper's strategies (§5.1) as sort orders, backlogged last

The plan built from these (fallback chains, routes, overflow) is policy/routing.py. No I/O, no logging.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from policy.keys import may_use, policy_for
from policy.pricing import estimate_tokens, max_input_tokens, worst_case_cost
from schemas.base import TIERS, Capability, Strategy, Tier
from schemas.config.models import CloudModel, LocalModel
from schemas.config.ops import TierPolicy
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Target
from schemas.request import GenerateRequest
from schemas.state import HostState, ProviderState, TierState

TIER_RANK: dict[str, int] = {"local": 0, "together": 1, "premium": 2}
HOST_STALE_AFTER = 3.0  # heartbeats missed before a host counts as down
DEFAULT_CLOUD_LATENCY_MS = 800.0

POLICY_TIERS: dict[TierPolicy, tuple[Tier, ...]] = {
    "local_only": ("local",),
    "local_then_together": ("local", "together"),
    "diverse_all_tiers": ("local", "together", "premium"),
    "premium_validation": ("premium", "local", "together"),
    "local_with_together_fallback": ("local", "together"),
}


@dataclass
class Snapshot:
    """What the router knows of the orchestra right now (plain data, built from KV watches)."""

    now: float
    hosts: dict[str, HostState] = field(default_factory=dict)
    tiers: dict[str, TierState] = field(default_factory=dict)
    providers: dict[str, ProviderState] = field(default_factory=dict)
    phase: str | None = None
    inflight: dict[str, int] = field(default_factory=dict)  # target key -> dispatched, unfinished
    latency_ms: dict[str, float] = field(default_factory=dict)  # target key -> EWMA of total time
    backlog: set[str] = field(default_factory=set)  # target keys over their queue threshold
    overflow: dict[str, Tier] = field(default_factory=dict)  # local model ("*" = all) -> overflow tier
    turn: int = 0  # round-robin counter
    # Heartbeats are only judged from the moment the router could see them: after its own bus outage a
    # host's last beat is old because the router was deaf, not because the host died (0: no outage yet).
    observed_since: float = 0.0
    measured: dict[str, float] = field(default_factory=dict)  # model -> measured quality (0..10), enough checks


def target_key(t: Target) -> str:
    return f"{t.tier}:{t.where}:{t.model}"


# --- availability ----------------------------------------------------------------------------------
def tier_enabled(snap: Snapshot, tier: str) -> bool:
    state = snap.tiers.get(tier)
    if state is None or state.enabled:
        return True
    return state.until is not None and state.until <= snap.now


def host_up(cfg: OrchestraConfig, snap: Snapshot, host: str) -> bool:
    state = snap.hosts.get(host)
    if state is None or not state.up:
        return False
    hcfg = cfg.hosts.get(host)
    beat = float(hcfg.heartbeat) if hcfg else 2.0
    last = max(state.heartbeat_at, snap.observed_since)  # a fresh grace period after a reconnect
    return snap.now - last <= max(HOST_STALE_AFTER * beat, 5.0)


def provider_available(snap: Snapshot, provider: str) -> bool:
    """Unknown means unavailable: only a running cloud_proxy says a provider can be used."""
    state = snap.providers.get(provider)
    return state is not None and state.available and state.cooldown_until <= snap.now


def allowed_tiers(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> tuple[Tier, ...]:
    """Tiers in preference order: the phase policy, the client's restriction, minus disabled tiers.
    (The phase's validation share is served as usual and checked by a premium shadow: validation.py.)"""
    phase = cfg.phases.get(snap.phase or cfg.rotator.initial_phase)
    order: tuple[Tier, ...] = POLICY_TIERS[phase.tier_policy] if phase else ("local", "together")
    if request.requirements.tiers:
        wanted = set(request.requirements.tiers)
        order = tuple(t for t in order if t in wanted) or tuple(t for t in TIERS if t in wanted)
    return tuple(t for t in order if tier_enabled(snap, t))


def _sampled(request_id: str, share: float) -> bool:
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 < share


# --- candidates ------------------------------------------------------------------------------------
def _local_targets(name: str, model: LocalModel, cfg: OrchestraConfig, snap: Snapshot) -> list[tuple[Target, bool]]:
    """(target, loaded) for every up host that has the model loaded or could load it."""
    out: list[tuple[Target, bool]] = []
    for host, hcfg in cfg.hosts.items():
        if not host_up(cfg, snap, host):
            continue
        if model.cards and not set(model.cards) <= set(hcfg.cards):
            continue
        state = snap.hosts[host]
        loaded = any(m.model == name and not m.draining for m in state.models)  # draining: being unloaded
        out.append((Target(tier="local", model=name, family=model.family, host=host), loaded))
    return out


def candidates(name: str, cfg: OrchestraConfig, snap: Snapshot) -> list[tuple[Target, bool]]:
    model = cfg.models[name]
    if isinstance(model, LocalModel):
        return _local_targets(name, model, cfg, snap)
    if not provider_available(snap, model.provider):
        return []
    if snap.providers[model.provider].cooling.get(name, 0.0) > snap.now:
        return []  # this deployment's circuit is open
    tier = cfg.providers[model.provider].tier
    return [(Target(tier=tier, model=name, family=model.family, provider=model.provider), True)]


def constrains_output(cfg: OrchestraConfig, name: str, request: GenerateRequest) -> bool:
    """Whether a model can follow the request's response_format and tools (a grammar on llama.cpp, the
    provider's JSON mode and function calling): ctransformers models cannot, Anthropic has no JSON mode."""
    s = request.sampling
    wants_logprobs = s.logprobs or s.top_logprobs > 0
    if s.response_format is None and not s.calls_tools and not wants_logprobs and s.n == 1:
        return True
    model = cfg.models[name]
    if isinstance(model, LocalModel):
        return model.engine == "llama_cpp"
    api = cfg.providers[model.provider].api
    if (s.n > 1 and api != "openai") or (wants_logprobs and api == "anthropic"):
        return False  # only OpenAI-compatible providers take n; Anthropic gives no logprobs
    return s.response_format is None or api != "anthropic"


def fits(request: GenerateRequest, model: LocalModel | CloudModel, prompt_tokens: int) -> bool:
    return prompt_tokens + request.sampling.max_tokens <= model.context_length


def model_tier(cfg: OrchestraConfig, name: str) -> Tier:
    model = cfg.models[name]
    return "local" if isinstance(model, LocalModel) else cfg.providers[model.provider].tier


# --- ranking ---------------------------------------------------------------------------------------
def _latency(cfg: OrchestraConfig, snap: Snapshot, t: Target, request: GenerateRequest) -> float:
    known = snap.latency_ms.get(target_key(t))
    if known is not None:
        return known
    model = cfg.models[t.model]
    if model.speed_tps:
        return request.sampling.max_tokens / model.speed_tps * 1000.0
    return DEFAULT_CLOUD_LATENCY_MS if t.tier != "local" else 1000.0


def _load(snap: Snapshot, t: Target) -> int:
    load = snap.inflight.get(target_key(t), 0)
    if t.host and t.host in snap.hosts:
        load += sum(m.queue_depth for m in snap.hosts[t.host].models if m.model == t.model)
    return load


def rank(
    items: list[tuple[Target, bool]],
    strategy: Strategy,
    request: GenerateRequest,
    cfg: OrchestraConfig,
    snap: Snapshot,
    tier_order: tuple[Tier, ...],
    capability: Capability | None,
) -> list[Target]:
    input_bound = max_input_tokens(request)  # the worst case the budget holds, not the estimate
    tier_pos = {t: i for i, t in enumerate(tier_order)}

    def cost(t: Target) -> float:
        return worst_case_cost(cfg.models[t.model], input_bound, request.sampling.max_tokens, cfg.budgets.local_cost)

    def quality(t: Target) -> float:  # measured (premium agreement, reviews) once enough checks exist
        return snap.measured.get(t.model, cfg.models[t.model].quality)

    def special(t: Target) -> int:
        return 0 if capability and capability in cfg.models[t.model].specialisations else 1

    keys = {
        "cost": lambda t, loaded: (tier_pos[t.tier], not loaded, cost(t), -quality(t), _load(snap, t)),
        "quality": lambda t, loaded: (-quality(t), tier_pos[t.tier], not loaded, cost(t)),
        "speed": lambda t, loaded: (not loaded, _latency(cfg, snap, t, request), tier_pos[t.tier]),
        "specialisation": lambda t, loaded: (special(t), tier_pos[t.tier], not loaded, -quality(t), cost(t)),
        "least_loaded": lambda t, loaded: (_load(snap, t), tier_pos[t.tier], not loaded),
        "round_robin": lambda t, loaded: (tier_pos[t.tier], not loaded),
    }
    chosen = strategy if strategy in keys else "cost"
    ordered = [t for t, loaded in sorted(items, key=lambda it: keys[chosen](*it))]
    if chosen == "round_robin" and ordered:
        first_tier = [t for t in ordered if t.tier == ordered[0].tier]
        k = snap.turn % len(first_tier)
        ordered = first_tier[k:] + first_tier[:k] + ordered[len(first_tier) :]
    return backlogged_last(ordered, snap)


def backlogged_last(ordered: list[Target], snap: Snapshot) -> list[Target]:
    """Backlogged targets go last: new work prefers the others (the paper's §5.2)."""
    return [t for t in ordered if target_key(t) not in snap.backlog] + [
        t for t in ordered if target_key(t) in snap.backlog
    ]


def passes(
    request: GenerateRequest,
    cfg: OrchestraConfig,
    name: str,
    tiers: tuple[Tier, ...],
    prompt_tokens: int,
    *,
    check_key: bool = True,
) -> bool:
    """The request's requirements, applied to one library model."""
    req = request.requirements
    model = cfg.models[name]
    if model_tier(cfg, name) not in tiers:
        return False
    if check_key and not may_use(policy_for(cfg, request.client_key), name):  # the key's allow-list, every path
        return False
    if not constrains_output(cfg, name, request):
        return False
    if req.family and model.family != req.family:
        return False
    if req.min_quality is not None and model.quality < req.min_quality:
        return False
    if req.min_context is not None and model.context_length < req.min_context:
        return False
    if not fits(request, model, prompt_tokens):
        return False
    if req.max_cost_usd is not None:  # the worst case, as the budget holds it
        worst = worst_case_cost(
            model, max_input_tokens(request), request.sampling.max_tokens * request.sampling.n, cfg.budgets.local_cost
        )
        if worst > req.max_cost_usd:
            return False
    return True


def _eligible(
    request: GenerateRequest,
    cfg: OrchestraConfig,
    snap: Snapshot,
    tiers: tuple[Tier, ...],
    *,
    keep_families: bool = False,
) -> list[tuple[Target, bool]]:
    """Every (target, loaded) that passes the request's requirements. Auto-routing does not cold-load
    while a loaded model can answer; with ``keep_families`` (the diverse fan-out) a family that has no
    loaded model keeps its cold ones, so loading state never reduces a fan-out to one family."""
    prompt_tokens = estimate_tokens(request.prompt_text())
    items: list[tuple[Target, bool]] = []
    for name in cfg.models:
        if passes(request, cfg, name, tiers, prompt_tokens):
            items.extend(candidates(name, cfg, snap))
    if not any(loaded for t, loaded in items if t.tier == "local"):
        return items
    served = {t.family for t, loaded in items if loaded or t.tier != "local"}
    return [
        (t, loaded) for t, loaded in items if loaded or t.tier != "local" or (keep_families and t.family not in served)
    ]
