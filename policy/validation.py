"""Premium validation (the paper's §8.2), pure: the phase's ``validation_share`` of requests is answered
locally as usual, and a premium answer to the same request is obtained alongside (a shadow request that
the client never sees); the two are compared and the verdict becomes an event that the diversity_monitor
folds into each model's measured quality.

    drawn(request, cfg, snap) -> bool                      is this request one of the phase's share?
    shadow_plan(request, cfg, snap) -> [Target]            premium models that can answer it, best first
    shadow_request(request, target, cfg) -> GenerateRequest   the premium copy (own id, no cache, capped)
    Pairs.expect / Pairs.seen(id, outcome) -> Event | None   the verdict once both answers are in

The shadow goes through the router's normal attempt machinery, so the budget_guard holds and charges it
like any cloud call; a refusal (``budget_exceeded``) ends it as a typed error and the verdict is a
``validation.skipped`` event with that reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from policy.agreement import agreement
from policy.pricing import estimate_tokens
from policy.targets import Snapshot, _sampled, candidates, model_tier, passes, rank, tier_enabled
from schemas.base import Tier
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Target
from schemas.events import Event, ValidationCompared, ValidationSkipped
from schemas.request import CachePolicy, GenerateRequest
from schemas.result import GenerateError, GenerateResult, Outcome

SHADOW_SUFFIX = "-pv"
MAX_SHADOW_TARGETS = 2


def drawn(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> bool:
    """One of the current phase's validation share (deterministic by request id), and premium may be asked:
    not a fan-out, not a request kept off premium by its own tiers. (A disabled premium tier does not
    undraw it: the check is skipped with that reason, and counted.)"""
    phase = cfg.phases.get(snap.phase or cfg.rotator.initial_phase)
    if phase is None or not phase.validation_share or request.mode != "single":
        return False
    if request.requirements.tiers and "premium" not in request.requirements.tiers:
        return False
    return _sampled(request.id, phase.validation_share)


def unavailable(snap: Snapshot) -> str | None:
    """Why no premium answer can be asked now (None: it can)."""
    return None if tier_enabled(snap, "premium") else "premium_disabled"


def shadow_id(request_id: str) -> str:
    """The shadow's own request id (at most 64 characters, like every id)."""
    if len(request_id) + len(SHADOW_SUFFIX) <= 64:
        return request_id + SHADOW_SUFFIX
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).hexdigest()
    return f"{request_id[:50]}{SHADOW_SUFFIX}{digest}"


def shadow_request(request: GenerateRequest, target: Target, cfg: OrchestraConfig) -> GenerateRequest:
    sampling = request.sampling
    cap = cfg.router.validation.max_tokens
    if cap is not None and sampling.max_tokens > cap:
        sampling = msgspec.structs.replace(sampling, max_tokens=cap)
    return msgspec.structs.replace(
        request,
        id=shadow_id(request.id),
        model=target.model,
        mode="single",
        stream=False,
        sampling=msgspec.structs.replace(sampling, n=1),
        cache=CachePolicy(no_cache=True, no_store=True),  # a check, not an answer to keep
        task=None,  # not one of the task's answers: the monitor's per-task diversity leaves it out
        client_key=None,  # the lab's check, not the client's spend (the key's allow-list chose the plan)
        tags={**request.tags, "parent": request.id, "validation": "premium"},
    )


def shadow_plan(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> list[Target]:
    """Premium models that pass the request's requirements, best configured rank first."""
    tiers: tuple[Tier, ...] = ("premium",)
    prompt_tokens = estimate_tokens(request.prompt_text())
    items = []
    for name in cfg.models:
        if model_tier(cfg, name) == "premium" and passes(request, cfg, name, tiers, prompt_tokens):
            items.extend(candidates(name, cfg, snap))
    ranked = rank(items, "quality", request, cfg, snap, tiers, None)
    return ranked[:MAX_SHADOW_TARGETS]


@dataclass
class Pair:
    request_id: str
    shadow_id: str
    local: Outcome | None = None
    premium: Outcome | None = None
    local_seen: bool = False
    premium_seen: bool = False


class Pairs:
    """The validated requests in flight (per router instance: the one that owns the request)."""

    def __init__(self, agree_at: float) -> None:
        self.agree_at = agree_at
        self.by_id: dict[str, Pair] = {}

    def expect(self, request_id: str, shadow: str) -> None:
        pair = Pair(request_id, shadow)
        self.by_id[request_id] = pair
        self.by_id[shadow] = pair

    def seen(self, request_id: str, outcome: Outcome | None) -> Event | None:
        """An outcome of a validated request or of its shadow; the verdict when both are in."""
        pair = self.by_id.get(request_id)
        if pair is None:
            return None
        if request_id == pair.shadow_id:
            pair.premium, pair.premium_seen = outcome, True
        else:
            pair.local, pair.local_seen = outcome, True
        if not (pair.local_seen and pair.premium_seen):
            return None
        self.by_id.pop(pair.request_id, None)
        self.by_id.pop(pair.shadow_id, None)
        return verdict(pair.request_id, pair.local, pair.premium, self.agree_at)


def verdict(request_id: str, local: Outcome | None, premium: Outcome | None, agree_at: float) -> Event:
    model = local.model if isinstance(local, GenerateResult) else ""
    premium_model = premium.model if isinstance(premium, GenerateResult) else ""

    def skipped(reason: str) -> ValidationSkipped:
        return ValidationSkipped(request_id=request_id, model=model, premium_model=premium_model, reason=reason)

    if not isinstance(local, GenerateResult):
        return skipped("local_failed")
    if local.tier == "premium":
        return skipped("served_by_premium")
    if isinstance(premium, GenerateError):
        return skipped(premium.error.code)
    if premium is None:
        return skipped("premium_unreadable")
    score = agreement(local.text, premium.text)
    return ValidationCompared(
        request_id=request_id,
        model=model,
        premium_model=premium_model,
        agreement=score,
        agreed=score >= agree_at,
    )
