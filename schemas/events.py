"""Events: facts that happened, on ``orch.event.<kind>`` (stream EVENTS), one tagged union.

Every event carries ``at`` (epoch seconds) and ``source`` (the actor that saw it). The subject is
``orch.event.`` + ``kind``, so ``orch.event.model.>`` selects all model events.
"""

from __future__ import annotations

from typing import Any

from schemas.base import KeepAlive, Severity, Tagged, Tier
from schemas.errors import ErrorInfo
from schemas.result import Response


class Event(Tagged, frozen=True, kw_only=True):
    at: float = 0.0
    source: str = ""


# --- actors and hosts ----------------------------------------------------------------------------
class ActorStarted(Event, frozen=True, kw_only=True, tag="actor.started"):
    actor: str
    instance: str = ""


class ActorStopped(Event, frozen=True, kw_only=True, tag="actor.stopped"):
    actor: str
    instance: str = ""


class ActorRestarted(Event, frozen=True, kw_only=True, tag="actor.restarted"):
    """A process of ``orchestra up`` exited by itself; the supervisor restarts it after ``delay_s``."""

    actor: str  # the Procfile line
    exit_code: int
    restarts: int  # since `orchestra up` started
    delay_s: float = 0.0


class HostUp(Event, frozen=True, kw_only=True, tag="host.up"):
    host: str
    cards: list[str] = []


class HostDown(Event, frozen=True, kw_only=True, tag="host.down"):
    host: str
    reason: str = ""


class DeadLettered(Event, frozen=True, kw_only=True, tag="deadletter"):
    stream: str
    subject: str
    consumer: str
    deliveries: int
    reason: str


# --- models on cards -----------------------------------------------------------------------------
class ModelLoaded(Event, frozen=True, kw_only=True, tag="model.loaded"):
    host: str
    model: str
    instance: int = 0
    cards: list[str] = []
    bytes: int = 0
    load_ms: float = 0.0
    reason: str = ""
    variant: str = ""  # the quantisation loaded (q8_0, q3_k_m+attn-q8_0, ...)
    variant_reason: str = ""  # why that one: the more precise ones that did not fit, and the memory seen


class ModelUnloaded(Event, frozen=True, kw_only=True, tag="model.unloaded"):
    host: str
    model: str
    instance: int = 0
    bytes: int = 0
    reason: str = ""
    drain_ms: float = 0.0  # waiting for the requests it had to finish
    unload_ms: float = 0.0  # freeing it (engine stopped, memory released)


class ModelSwap(Event, frozen=True, kw_only=True, tag="model.swap"):
    host: str
    unloaded: list[str] = []
    loaded: list[str] = []
    swap_ms: float = 0.0
    reason: str = ""


class ModelKeepAlive(Event, frozen=True, kw_only=True, tag="model.keep_alive"):
    """A loaded model is kept differently now (hot / warm / cold); it stays loaded."""

    host: str
    model: str
    keep_alive: KeepAlive
    previous: KeepAlive | None = None
    reason: str = ""


class ModelLoadFailed(Event, frozen=True, kw_only=True, tag="model.load_failed"):
    host: str
    model: str
    error: ErrorInfo


class Oom(Event, frozen=True, kw_only=True, tag="oom"):
    host: str
    card: str
    model: str
    requested_bytes: int = 0
    free_bytes: int = 0
    total_bytes: int = 0
    detail: str = ""
    request_id: str | None = None
    variant: str = ""  # the quantisation that did not fit (empty: refused before any variant was tried)


# --- traffic -------------------------------------------------------------------------------------
class RequestRouted(Event, frozen=True, kw_only=True, tag="request.routed"):
    """Kept so older histories decode; the router now records each decision on the stored Dispatch."""

    request_id: str
    target: str
    model: str
    tier: Tier
    strategy: str = ""
    reason: str = ""
    attempt: int = 0


class RequestFallback(Event, frozen=True, kw_only=True, tag="request.fallback"):
    request_id: str
    failed_target: str
    next_target: str | None
    error: ErrorInfo
    attempt: int = 0


class QueueBacklog(Event, frozen=True, kw_only=True, tag="queue.backlog"):
    target: str
    depth: int
    oldest_wait_s: float = 0.0
    threshold: int = 0


class Scale(Event, frozen=True, kw_only=True, tag="scale"):
    model: str
    action: str  # "up" | "down" | "overflow_on" | "overflow_off"
    host: str | None = None
    reason: str = ""


class CacheHit(Event, frozen=True, kw_only=True, tag="cache.hit"):
    request_id: str
    layer: str  # "exact" | "semantic"
    similarity: float = 1.0


class Escalated(Event, frozen=True, kw_only=True, tag="ensemble.escalated"):
    """Answers that did not agree enough: the diversity_monitor queues them for human review."""

    request_id: str
    consistency: float
    threshold: float
    models: list[str] = []
    prompt: str = ""  # the request's prompt (or last user message), for the reviewer
    responses: list[Response] = []  # every answer, with its provenance
    winner: int | None = None  # the index of the answer the vote chose


class ReviewDecided(Event, frozen=True, kw_only=True, tag="review.decided"):
    """An operator decided an escalated request: the chosen answer's model is credited, the others debited."""

    request_id: str
    verdict: str  # "accept" | "reject"
    answer: int | None = None  # the chosen answer's index (None: none chosen, or a written answer)
    text: str | None = None  # a written answer, when the reviewer gave one
    credited: list[str] = []  # models whose answer was chosen
    debited: list[str] = []  # models whose answers were not
    by: str = ""


class ValidationCompared(Event, frozen=True, kw_only=True, tag="validation.compared"):
    """Premium validation: the local answer served to the client next to a premium answer to the same request."""

    request_id: str
    model: str  # the local model that answered the client
    premium_model: str
    agreement: float  # 0..1, from the router's comparator
    agreed: bool  # agreement >= router.validation.agree_at


class EvaluationScored(Event, frozen=True, kw_only=True, tag="evaluation.scored"):
    """Phase 3's automatic grading: the phase's evaluator scored one sampled generator answer (the
    diversity_monitor asked it; actors/diversity_monitor/grading.py)."""

    request_id: str  # the graded answer's request
    evaluation_id: str  # the evaluator's own request (origin ``mon``)
    model: str  # the generator whose answer was graded
    evaluator: str
    score: int  # 1..5 (policy/evaluation.py's rubric)
    reason: str = ""
    agreed: bool  # score >= 4: counted as a passed check in the model's measured quality


class ValidationSkipped(Event, frozen=True, kw_only=True, tag="validation.skipped"):
    """A request drawn for validation got no comparison: the reason says why (budget_exceeded, ...)."""

    request_id: str
    model: str = ""
    premium_model: str = ""
    reason: str


# --- money ---------------------------------------------------------------------------------------
class CostSpike(Event, frozen=True, kw_only=True, tag="cost.spike"):
    daily_usd: float
    velocity_usd_per_hour: float = 0.0
    limit_usd: float = 0.0
    reason: str = ""


class BudgetThreshold(Event, frozen=True, kw_only=True, tag="budget.threshold"):
    scope: str  # e.g. "tier:premium:daily"
    spent_usd: float
    limit_usd: float
    fraction: float
    hard: bool = False


class TierDisabled(Event, frozen=True, kw_only=True, tag="tier.disabled"):
    tier: Tier
    reason: str = ""
    until: float | None = None


class TierEnabled(Event, frozen=True, kw_only=True, tag="tier.enabled"):
    tier: Tier
    reason: str = ""


class LedgerCompacted(Event, frozen=True, kw_only=True, tag="ledger.compacted"):
    """LEDGER reached half its bytes: the entries two snapshots cover were purged (budgets stay exact;
    the ledger's audit now starts at ``kept_from``)."""

    covers_seq: int  # the latest snapshot's
    kept_from: int  # the first LEDGER sequence kept
    bytes_before: int
    bytes_after: int
    limit_bytes: int


class ProviderCooldown(Event, frozen=True, kw_only=True, tag="provider.cooldown"):
    provider: str
    model: str = ""
    until: float = 0.0
    failures: int = 0
    reason: str = ""


# --- phases, diversity, alerts -------------------------------------------------------------------
class PhaseChanged(Event, frozen=True, kw_only=True, tag="phase.changed"):
    previous: str | None
    phase: str
    by: str = ""


class RotationPlanned(Event, frozen=True, kw_only=True, tag="rotation.planned"):
    phase: str
    steps: list[str] = []
    reason: str = ""


class DiversityReport(Event, frozen=True, kw_only=True, tag="diversity.report"):
    window_s: float
    task: str | None = None
    metrics: dict[str, float] = {}


class DiversityLow(Event, frozen=True, kw_only=True, tag="diversity.low"):
    metric: str
    value: float
    threshold: float
    task: str | None = None


class AlertRaised(Event, frozen=True, kw_only=True, tag="alert.raised"):
    alert_id: str
    rule: str
    severity: Severity
    context: dict[str, Any] = {}
    action: str = ""


class AlertResolved(Event, frozen=True, kw_only=True, tag="alert.resolved"):
    alert_id: str
    rule: str


class AlertAcknowledged(Event, frozen=True, kw_only=True, tag="alert.acknowledged"):
    alert_id: str
    by: str = ""


class Remediation(Event, frozen=True, kw_only=True, tag="remediation"):
    alert_id: str
    rule: str
    action: str
    commands: list[str] = []
    detail: str = ""
    step: int | None = None  # the escalation step that took it; None: taken when the alert was raised


class Notified(Event, frozen=True, kw_only=True, tag="notified"):
    alert_id: str | None
    channel: str
    ok: bool = True
    detail: str = ""
    step: int | None = None  # the escalation step it carried out; None: a digest


AnyEvent = (
    ActorStarted
    | ActorStopped
    | ActorRestarted
    | HostUp
    | HostDown
    | DeadLettered
    | ModelLoaded
    | ModelUnloaded
    | ModelSwap
    | ModelKeepAlive
    | ModelLoadFailed
    | Oom
    | RequestRouted
    | RequestFallback
    | QueueBacklog
    | Scale
    | CacheHit
    | Escalated
    | ReviewDecided
    | ValidationCompared
    | ValidationSkipped
    | EvaluationScored
    | CostSpike
    | BudgetThreshold
    | TierDisabled
    | TierEnabled
    | LedgerCompacted
    | ProviderCooldown
    | PhaseChanged
    | RotationPlanned
    | DiversityReport
    | DiversityLow
    | AlertRaised
    | AlertResolved
    | AlertAcknowledged
    | Remediation
    | Notified
)


def event_kind(event: Event) -> str:
    """The tag of an event (its ``kind``), e.g. ``model.loaded``."""
    return str(type(event).__struct_config__.tag)
