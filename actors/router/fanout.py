"""Fan-out modes, pure: ``diverse`` (the paper's §9.2) and ``ensemble`` (Mirador's consensus).

diverse_children(request, cfg, snap) -> [Child]  each family in turn (families.py), then temperature x top_p x variant
ensemble_children(request, cfg, snap) -> [Child] distinct models, families first, same prompt; local
                                                  members are asked for token logprobs (their confidence)
plan_fanout(request, cfg, snap) -> FanOutPlan     either, with an ensemble route's members and threshold
The ensemble's vote is policy/consensus/ (pure) and actors/router/ensemble.py (its I/O).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from actors.router.families import diverse_targets, families_first
from policy.targets import Snapshot, _eligible, allowed_tiers, rank, target_key
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Sampling

PROMPT_VARIANTS: dict[str, str] = {
    "direct": "{task}",
    "plan-first": "First outline a short plan, then carry it out.\n\n{task}",
    "test-first": "First write the checks (tests) a correct answer must pass, then give the answer.\n\n{task}",
    "example-driven": "Start from one concrete example, then generalise to the full answer.\n\n{task}",
    "constraint-based": "Answer under an explicit constraint: be efficient (aim for O(n log n) or better where "
    "it applies) and state your assumptions.\n\n{task}",
}


@dataclass(frozen=True)
class Child:
    request: GenerateRequest
    plan: list[Target]
    prompt_variant: str | None = None


@dataclass(frozen=True)
class FanOutPlan:
    children: list[Child]
    models: list[str] | None  # ensemble members named by a route (primary + validators)
    threshold: float


def plan_fanout(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> FanOutPlan | ErrorInfo:
    """A diverse or ensemble request's children; an ensemble on a route asks its primary and validators
    and votes at the route's threshold."""
    route = cfg.routes.get(request.requirements.route or "")
    threshold = cfg.router.ensemble.consensus_threshold
    models = None
    if request.mode == "ensemble" and route is not None:
        models, threshold = [route.primary, *route.validators], route.consensus_threshold
    children = (
        diverse_children(request, cfg, snap)
        if request.mode == "diverse"
        else ensemble_children(request, cfg, snap, models)
    )
    if isinstance(children, ErrorInfo):
        return children
    return FanOutPlan(children=children, models=models, threshold=threshold)


def _vary(request: GenerateRequest, variant: str) -> tuple[list[ChatMessage] | None, str | None]:
    template = PROMPT_VARIANTS.get(variant, "{task}")
    if request.prompt is not None:
        return None, template.format(task=request.prompt)
    messages = list(request.messages or [])
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            messages[i] = ChatMessage(role="user", content=template.format(task=messages[i].content))
            break
    return messages, None


def _child(request: GenerateRequest, index: int, plan: list[Target], **changes: object) -> GenerateRequest:
    return msgspec.structs.replace(
        request,
        id=f"{request.id}-{index}",
        model=plan[0].model,
        mode="single",
        stream=False,
        cache=CachePolicy(no_cache=True, no_store=True),  # diversity is the point
        tags={**request.tags, "parent": request.id},
        **changes,
    )


def _targets(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> list[Target] | ErrorInfo:
    tiers = allowed_tiers(request, cfg, snap)
    items = _eligible(request, cfg, snap, tiers)
    if not items:
        return ErrorInfo.of("unavailable", f"no model can take part in a {request.mode} request now")
    ranked = rank(items, "quality" if request.mode == "ensemble" else "cost", request, cfg, snap, tiers, None)
    return families_first(ranked)  # distinct models, one family in turn


def diverse_children(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> list[Child] | ErrorInfo:
    targets = diverse_targets(request, cfg, snap)  # every family that can answer (families.py)
    if isinstance(targets, ErrorInfo):
        return targets
    dcfg = cfg.router.diverse
    n = request.requirements.fanout or dcfg.fanout
    temps, top_ps = dcfg.temperatures or [request.sampling.temperature], dcfg.top_ps or [request.sampling.top_p]
    variants = dcfg.prompt_variants or ["direct"]
    children = []
    for i in range(n):
        target = targets[i % len(targets)]
        backup = [t for t in targets if t.model != target.model and t.tier == target.tier][:1]
        variant = variants[i % len(variants)]
        messages, prompt = _vary(request, variant)
        sampling = msgspec.structs.replace(
            request.sampling, temperature=temps[i % len(temps)], top_p=top_ps[(i // len(temps)) % len(top_ps)]
        )
        plan = [target, *backup]
        children.append(
            Child(
                request=_child(request, i, plan, messages=messages, prompt=prompt, sampling=sampling),
                plan=plan,
                prompt_variant=variant,
            )
        )
    return children


def ensemble_children(
    request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot, models: list[str] | None = None
) -> list[Child] | ErrorInfo:
    """``models``: a route's primary + validators; otherwise the best distinct models, families first."""
    targets = _targets(request, cfg, snap)
    if isinstance(targets, ErrorInfo):
        return targets
    if models:
        by_model = {t.model: t for t in targets}
        chosen = [by_model[m] for m in models if m in by_model]
    else:
        chosen = targets[: request.requirements.fanout or cfg.router.ensemble.size]
    if len(chosen) < 2:
        return ErrorInfo.of("unavailable", f"an ensemble needs two models; available now: {[t.model for t in chosen]}")
    return [
        Child(request=_child(request, i, [t], sampling=_scored(request, t)), plan=[t]) for i, t in enumerate(chosen)
    ]


def _scored(request: GenerateRequest, target: Target) -> Sampling:
    """llama.cpp gives each token's logprob (the answer's confidence): asked for on local members. Cloud
    providers differ in what they support, so theirs are left as the client sent them."""
    if target.tier != "local" or request.sampling.logprobs:
        return request.sampling
    return msgspec.structs.replace(request.sampling, logprobs=True)


def child_key(target: Target) -> str:
    return target_key(target)
