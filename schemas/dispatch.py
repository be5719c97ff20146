"""Dispatch: a routed request on its way to a worker (``orch.dispatch.host.*`` / ``orch.dispatch.cloud.*``)."""

from __future__ import annotations

from schemas.base import Message, Tier
from schemas.request import GenerateRequest, Sampling


class Target(Message, frozen=True, kw_only=True):
    """One place that can answer: a model on a gpu_host, or a model at a cloud provider."""

    tier: Tier
    model: str  # library name
    family: str = ""
    host: str | None = None  # gpu_host id (local tier)
    provider: str | None = None  # provider name (cloud tiers)

    @property
    def where(self) -> str:
        return self.host or self.provider or "?"


class Dispatch(Message, frozen=True, kw_only=True):
    request: GenerateRequest
    target: Target
    attempt: int = 0
    plan: list[Target] = []  # the fallback chain, target == plan[attempt] when a plan exists
    reservation_id: str | None = None  # budget reservation to settle (a per-request hold, or a lease)
    reserved_nanos: int = 0  # the worst case held for this attempt (drawn from the lease, if one)
    sampling: Sampling | None = None  # overrides request.sampling (diverse fan-out variants)
    prompt_variant: str | None = None
    parent_id: str | None = None  # set on fan-out children: the id of the diverse/ensemble request
    strategy: str = ""  # why this target: the routing decision, stored with the dispatch (audit)
    route: str | None = None  # the declarative route that chose it, if any
    dispatched_at: float = 0.0
    cache_store: bool = True  # the cache remembered this request's miss (policy.caching.decide): store its answer

    @property
    def effective_sampling(self) -> Sampling:
        return self.sampling or self.request.sampling
