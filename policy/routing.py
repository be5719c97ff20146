"""Where a request goes: a pure function of the request, the config and a snapshot of the orchestra.

    plan_request(request, cfg, snap) -> Plan (ordered fallback chain of Targets) | ErrorInfo

The paper's strategies (§5.1: speed, quality, specialisation, round robin; plus least loaded and the
§8.2 cost ladder), the per-phase tier policy (§8.2), Mirador's declarative routes, and backlog
avoidance. No I/O, no logging: everything it needs is in ``Snapshot``; what can serve a request and
in what order is policy/targets.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.classify import classify
from policy.keys import may_use, policy_for
from policy.pricing import estimate_tokens
from policy.targets import (
    Snapshot,
    _eligible,
    _load,
    allowed_tiers,
    backlogged_last,
    candidates,
    constrains_output,
    fits,
    host_up,
    model_tier,
    passes,
    provider_available,
    rank,
    target_key,
    tier_enabled,
)
from schemas.base import Capability, Strategy, Tier
from schemas.config.models import CloudModel, LocalModel
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import VIRTUAL_MODELS, GenerateRequest


@dataclass(frozen=True)
class Plan:
    targets: list[Target]
    strategy: str
    capability: Capability | None = None
    reason: str = ""
    route: str | None = None


# --- the plan --------------------------------------------------------------------------------------
def route_of(request: GenerateRequest, cfg: OrchestraConfig) -> str | None:
    """The declarative route a request uses: the one it names, else the one for its capability
    (never for a request naming a library model)."""
    if request.requirements.route is not None:
        return request.requirements.route
    if request.model and request.model not in VIRTUAL_MODELS:
        return None
    capability = classify(request)
    return next((n for n, r in cfg.routes.items() if r.capability == capability), None)


def consensus_route(request: GenerateRequest, cfg: OrchestraConfig) -> str | None:
    """A single-mode request whose route has validators runs as Mirador's consensus: the primary
    and the validators answer, and the route's consensus_threshold decides (``mode=ensemble``)."""
    if request.mode != "single":
        return None
    name = route_of(request, cfg)
    route = cfg.routes.get(name or "")
    return name if route is not None and route.validators else None


def plan_request(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> Plan | ErrorInfo:
    """The ordered fallback chain for a single-mode request, or the typed error why there is none."""
    tiers = allowed_tiers(request, cfg, snap)
    name = request.model
    limit = cfg.router.max_attempts
    if name and name not in VIRTUAL_MODELS:
        return _plan_named(request, cfg, snap, name, tiers, limit)
    route_name = request.requirements.route
    capability = classify(request)
    if route_name is None:
        route_name = next((n for n, r in cfg.routes.items() if r.capability == capability), None)
    if route_name is not None:
        return _plan_route(request, cfg, snap, route_name, tiers, limit, capability)
    strategy: Strategy = request.requirements.strategy
    if strategy == "auto":
        strategy = "specialisation" if capability not in ("general", "conversational") else cfg.router.default_strategy
    items = _eligible(request, cfg, snap, tiers)
    if not items:
        return _nothing_available(request, cfg, snap, tiers)
    ordered = chat_models_first(rank(items, strategy, request, cfg, snap, tiers, capability), request, cfg)
    ordered = _with_overflow(ordered, cfg, snap, tiers)
    return Plan(targets=_diverse_chain(ordered, limit), strategy=strategy, capability=capability)


def chat_models_first(ordered: list[Target], request: GenerateRequest, cfg: OrchestraConfig) -> list[Target]:
    """A base model (completion_only) serves completions best: for a chat it comes last."""
    if request.messages is None:
        return ordered

    def base(t: Target) -> bool:
        model = cfg.models[t.model]
        return isinstance(model, LocalModel) and model.completion_only

    return [t for t in ordered if not base(t)] + [t for t in ordered if base(t)]


def _diverse_chain(ordered: list[Target], limit: int) -> list[Target]:
    """The first ``limit`` targets, no (model, place) twice."""
    seen: set[str] = set()
    chain = []
    for t in ordered:
        if target_key(t) not in seen:
            seen.add(target_key(t))
            chain.append(t)
    return chain[:limit]


def _with_overflow(
    ordered: list[Target], cfg: OrchestraConfig, snap: Snapshot, tiers: tuple[Tier, ...]
) -> list[Target]:
    """A local model under overflow (backlog remediation) yields to the cloud tier it names."""
    if not snap.overflow or not ordered or ordered[0].tier != "local":
        return ordered
    tier = snap.overflow.get(ordered[0].model) or snap.overflow.get("*")
    if tier is None or tier not in tiers:
        return ordered
    cloud = [t for t in ordered if t.tier == tier]
    return cloud + [t for t in ordered if t.tier != tier]


def _plan_named(
    request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot, name: str, tiers: tuple[Tier, ...], limit: int
) -> Plan | ErrorInfo:
    model = cfg.models.get(name)
    if model is None:
        return ErrorInfo.of("not_found", f"the model `{name}` does not exist", field="model")
    if not may_use(policy_for(cfg, request.client_key), name):
        return ErrorInfo.of("forbidden", f"this key may not use the model `{name}`", field="model")
    if not constrains_output(cfg, name, request):
        return ErrorInfo.of(
            "bad_request",
            f"`{name}` cannot serve this request's response_format, tools, logprobs or n",
            field="model",
        )
    tier = model_tier(cfg, name)
    if not tier_enabled(snap, tier):
        return ErrorInfo.of("unavailable", f"the {tier} tier is disabled; `{name}` cannot be used now")
    if request.requirements.tiers and tier not in request.requirements.tiers:
        return ErrorInfo.of("bad_request", f"`{name}` is a {tier} model, outside requirements.tiers", field="model")
    prompt_tokens = estimate_tokens(request.prompt_text())
    if not fits(request, model, prompt_tokens):
        return ErrorInfo.of(
            "context_too_long",
            f"about {prompt_tokens} prompt tokens + max_tokens {request.sampling.max_tokens} exceed the "
            f"{model.context_length}-token context of `{name}`",
            field="messages" if request.messages is not None else "prompt",
        )
    found = candidates(name, cfg, snap)
    if not found:
        if isinstance(model, CloudModel):
            where = f"provider {model.provider} is unavailable"
        else:
            where = "no gpu_host that can hold it is up"
        return ErrorInfo.of("unavailable", f"`{name}` cannot be served now: {where}")
    ordered = rank(found, "least_loaded", request, cfg, snap, (tier,), None)
    loaded = [t for t in ordered if any(t == f and ok for f, ok in found)]
    rest = [t for t in ordered if t not in loaded]
    return Plan(targets=(loaded + rest)[:limit], strategy="named", reason=f"model {name} requested")


def _plan_route(
    request: GenerateRequest,
    cfg: OrchestraConfig,
    snap: Snapshot,
    route_name: str,
    tiers: tuple[Tier, ...],
    limit: int,
    capability: Capability,
) -> Plan | ErrorInfo:
    """Mirador's declarative route: primary, then the fallbacks in order — within the request's
    requirements, loaded places first, backlogged places last, overflow honoured."""
    route = cfg.routes.get(route_name)
    if route is None:
        return ErrorInfo.of("not_found", f"no route named `{route_name}`", field="requirements.route")
    prompt_tokens = estimate_tokens(request.prompt_text())
    chain: list[Target] = []
    for name in [route.primary, *route.fallback]:
        if not passes(request, cfg, name, tiers, prompt_tokens):
            continue
        found = candidates(name, cfg, snap)
        found.sort(key=lambda it: (not it[1], _load(snap, it[0])))
        chain.extend(t for t, _ in found)
    if not chain:
        why = _nothing_available(request, cfg, snap, tiers)
        if why.code != "unavailable":
            return why
        return ErrorInfo.of("unavailable", f"route `{route_name}` ({[route.primary, *route.fallback]}): {why.message}")
    chain = _with_overflow(backlogged_last(chain, snap), cfg, snap, tiers)
    return Plan(
        targets=_diverse_chain(chain, max(limit, 1 + len(route.fallback))),
        strategy=route.strategy or "route",
        capability=capability,
        route=route_name,
        reason=f"route {route_name}",
    )


def _switched_off(cfg: OrchestraConfig, snap: Snapshot, name: str) -> bool:
    """A cloud model whose provider its cloud_proxy reports disabled or without an API key: out of reach in
    this deployment until an operator changes that (a cooldown is not: it ends by itself; and a provider
    nobody reported yet may still come)."""
    model = cfg.models[name]
    if isinstance(model, LocalModel):
        return False
    state = snap.providers.get(model.provider)
    return state is not None and not state.available


def _nothing_available(
    request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot, tiers: tuple[Tier, ...]
) -> ErrorInfo:
    if not tiers:
        return ErrorInfo.of("unavailable", "every tier this request may use is disabled")
    prompt_tokens = estimate_tokens(request.prompt_text())
    policy = policy_for(cfg, request.client_key)
    if policy.models and any(
        passes(request, cfg, n, tiers, prompt_tokens, check_key=False) and not may_use(policy, n) for n in cfg.models
    ):
        return ErrorInfo.of("forbidden", "this key may not use the models that match this request")
    in_tiers = [
        m
        for name, m in cfg.models.items()
        if model_tier(cfg, name) in tiers and may_use(policy, name) and not _switched_off(cfg, snap, name)
    ]
    if in_tiers and not any(fits(request, m, prompt_tokens) for m in in_tiers):
        # nothing to wait for: no model in reach has the context, now or later (a 400, not a 503)
        largest = max(m.context_length for m in in_tiers)
        return ErrorInfo.of(
            "context_too_long",
            f"about {prompt_tokens} prompt tokens + max_tokens {request.sampling.max_tokens} exceed the largest "
            f"context ({largest} tokens) of the models this request may use",
            field="messages" if request.messages is not None else "prompt",
        )
    up = [h for h in cfg.hosts if host_up(cfg, snap, h)]
    clouds = [p for p in cfg.providers if provider_available(snap, p)]
    return ErrorInfo.of(
        "unavailable",
        f"no model can serve this request in tiers {list(tiers)} "
        f"(gpu_hosts up: {up or 'none'}; cloud providers available: {clouds or 'none'})",
    )
