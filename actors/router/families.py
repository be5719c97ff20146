"""Who takes part in a ``diverse`` fan-out, pure: every family that can answer, ranked, taken in turn.

    diverse_targets(request, cfg, snap) -> [Target] | ErrorInfo

The paper's §9.2 wants answers from different model families more than from one family at several
temperatures. Specialisation (the request's capability) and the cost ladder only *order* the candidates;
none is dropped for them, and a family whose models are all unloaded still takes part (its model is
loaded on demand) — so the fan-out is reduced to one family only when no other family can answer: no
healthy host or available provider, not allowed by the key's allow-list, not within the request's
cost limit or context (``policy.passes``), or its tier disabled.
"""

from __future__ import annotations

from policy.classify import classify
from policy.pricing import max_input_tokens, worst_case_cost
from policy.targets import Snapshot, _eligible, _load, allowed_tiers, backlogged_last
from schemas.base import Capability, Tier
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest


def rank_fanout(
    items: list[tuple[Target, bool]],
    request: GenerateRequest,
    cfg: OrchestraConfig,
    snap: Snapshot,
    tier_order: tuple[Tier, ...],
    capability: Capability | None,
) -> list[Target]:
    """Tier first (the phase's policy), then specialisation for the capability, loaded before cold,
    cheaper, better; backlogged places last."""
    input_bound = max_input_tokens(request)
    tier_pos = {t: i for i, t in enumerate(tier_order)}

    def key(item: tuple[Target, bool]) -> tuple[int, int, bool, float, int, int]:
        t, loaded = item
        model = cfg.models[t.model]
        special = 0 if capability and capability in model.specialisations else 1
        cost = worst_case_cost(model, input_bound, request.sampling.max_tokens, cfg.budgets.local_cost)
        return (tier_pos[t.tier], special, not loaded, cost, -model.quality, _load(snap, t))

    return backlogged_last([t for t, _ in sorted(items, key=key)], snap)


def families_first(targets: list[Target]) -> list[Target]:
    """One model per family in turn, each model once, in ranked order (the first family is the one whose
    best model ranks first)."""
    by_family: dict[str, list[Target]] = {}
    seen: set[str] = set()
    for t in targets:
        if t.model not in seen:
            seen.add(t.model)
            by_family.setdefault(t.family or t.model, []).append(t)
    out: list[Target] = []
    while any(by_family.values()):
        for fam in list(by_family):
            if by_family[fam]:
                out.append(by_family[fam].pop(0))
    return out


def diverse_targets(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> list[Target] | ErrorInfo:
    tiers = allowed_tiers(request, cfg, snap)
    items = _eligible(request, cfg, snap, tiers, keep_families=True)
    if not items:
        return ErrorInfo.of("unavailable", "no model can take part in a diverse request now")
    capability = classify(request)
    return families_first(rank_fanout(items, request, cfg, snap, tiers, capability))
