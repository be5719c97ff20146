"""phases, routes, alerts and budgets: how the orchestra is run."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schemas.base import Capability, KeepAlive, Severity, Strategy, Tier
from schemas.config.base import Cfg, TaggedCfg
from schemas.config.units import Duration

# --- phases (the paper's §3.4) -------------------------------------------------------------------
TierPolicy = Literal[
    "local_only",
    "local_then_together",  # phases 1-2: local first, Together for diversity / overflow
    "diverse_all_tiers",  # phase 3: mix every tier for diversity
    "premium_validation",  # validation: premium APIs for a quality baseline
    "local_with_together_fallback",  # production
]


class PhaseGroupCfg(Cfg, frozen=True, kw_only=True):
    always_loaded: list[str] = []
    rotation_pool: list[str] = []
    rotation_size: Annotated[int, Meta(ge=0)] = 1  # how many of the pool are loaded at a time


class PhaseCfg(Cfg, frozen=True, kw_only=True):
    purpose: str = ""
    groups: dict[str, PhaseGroupCfg]
    rotation_frequency: Duration | None = None  # None: no rotation (a fixed set)
    tier_policy: TierPolicy = "local_then_together"
    validation_share: Annotated[float, Meta(ge=0, le=1)] = 0.0  # share served locally AND checked by premium
    keep_alive: dict[str, KeepAlive] = {}  # per-model override while this phase runs
    evaluators: list[str] = []  # models that score generator output (policy/evaluation.py)
    # share of generator results the diversity_monitor has the first evaluator grade (by request id)
    evaluate_share: Annotated[float, Meta(ge=0, le=1)] = 0.0


# --- routes (Mirador's declarative config) -------------------------------------------------------
class RouteCfg(Cfg, frozen=True, kw_only=True):
    primary: str
    fallback: list[str] = []
    validators: list[str] = []
    consensus_threshold: Annotated[float, Meta(ge=0, le=1)] = 0.7
    timeout_ms: Annotated[int, Meta(ge=1)] | None = None  # each attempt's; None: router.attempt_timeout
    capability: Capability | None = None  # requests classified as this use the route
    strategy: Strategy | None = None
    description: str = ""


# --- alerts (the paper's §10.2) ------------------------------------------------------------------
METRICS = frozenset(
    {
        "loaded_models",  # models loaded over all hosts
        "hosts_up",
        "queue_depth",  # pending requests, the worst target
        "queue_wait_s",  # age of the oldest pending request
        "oom_errors",  # count over `window`
        "daily_api_spend",  # USD today (cloud tiers)
        "spend_velocity",  # USD per hour over `window`
        "cache_hit_rate",  # 0..1 over `window`
        "model_families",  # distinct families answering over `window`
        "top_model_share",  # share of the most used model over `window`
        "error_rate",  # 0..1 over `window`
        "budget_used_fraction",  # highest threshold (share of a hard cap) the budget_guard reported, `window`
        "diversity_score",  # 0..1 over `window`
        "low_diversity_tasks",  # tasks reported `diversity.low` over `window` (too few unique approaches)
        "request_rate",  # requests per second over `window`
    }
)


class ConditionCfg(Cfg, frozen=True, kw_only=True):
    metric: str
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float
    window: Duration | None = None  # for counters and rates: over this trailing window


class AlertRuleCfg(Cfg, frozen=True, kw_only=True):
    description: str = ""
    when: Annotated[list[ConditionCfg], Meta(min_length=1)]  # all must hold
    sustained: Duration = Duration(0)  # ... for this long ("for 6 hours")
    severity: Severity
    action: Literal["none", "oom", "backlog", "cost_spike"] = "none"
    notify: list[str] | None = None  # None: the escalation policy of its severity
    min_samples: Annotated[int, Meta(ge=0)] = 0  # rates need this many requests in the window
    rationale: str = ""


class EscalationStepCfg(Cfg, frozen=True, kw_only=True):
    after: Duration = Duration(0)  # unacknowledged this long after the alert was raised
    notify: list[str] = []
    action: Literal["none", "disable_premium"] = "none"
    digest: Literal["daily", "weekly"] | None = None  # batch into a digest instead of notifying


class WebhookNotifierCfg(TaggedCfg, frozen=True, kw_only=True, tag="webhook"):
    """Slack-compatible incoming webhook: POST {"text": ...}."""

    url: str | None = None
    url_env: str | None = None  # webhook URLs are secrets too


class SmtpNotifierCfg(TaggedCfg, frozen=True, kw_only=True, tag="smtp"):
    host: str
    port: Annotated[int, Meta(ge=1, le=65535)] = 25
    from_addr: str
    to: Annotated[list[str], Meta(min_length=1)]
    starttls: bool = False
    ca_file: str | None = None  # a CA bundle for the server's certificate (a lab's own CA); default: the system's
    username_env: str | None = None
    password_env: str | None = None


NotifierCfg = WebhookNotifierCfg | SmtpNotifierCfg


class DigestCfg(Cfg, frozen=True, kw_only=True):
    daily_at: str = "09:00"  # local time of the monitor
    weekly_at: str = "mon 09:00"
    notify: list[str] = []


class AlertsCfg(Cfg, frozen=True, kw_only=True):
    rules: dict[str, AlertRuleCfg] = {}
    escalation: dict[Severity, list[EscalationStepCfg]] = {}
    notifiers: dict[str, NotifierCfg] = {}
    digests: DigestCfg = DigestCfg()
    evaluate_every: Duration = Duration(15)


# --- budgets (the paper's §8, §10.2) -------------------------------------------------------------
class BudgetLimitCfg(Cfg, frozen=True, kw_only=True):
    scope: Literal["total", "tier", "provider", "key", "model"]
    name: str | None = None  # tier / provider / key id / model; None for total
    period: Literal["daily", "monthly"]
    hard_usd: Annotated[float, Meta(ge=0)] | None = None  # reservations past it are denied
    soft: list[Annotated[float, Meta(gt=0, le=1)]] = msgspec.field(
        default_factory=lambda: [0.8]
    )  # fractions of hard_usd that raise events


class SpikeCfg(Cfg, frozen=True, kw_only=True):
    daily_usd: Annotated[float, Meta(ge=0)] = 50.0
    velocity_usd_per_hour: Annotated[float, Meta(ge=0)] | None = None
    window: Duration = Duration(3600)
    disable_tier: Tier = "premium"
    reenable: Literal["next_day", "manual"] = "next_day"


class LocalCostCfg(Cfg, frozen=True, kw_only=True):
    mode: Literal["electricity", "per_million"] = "per_million"
    kwh_usd: Annotated[float, Meta(ge=0)] = 0.15
    per_million_usd: Annotated[float, Meta(ge=0)] = 0.001  # the paper's 7B figure


class LeaseCfg(Cfg, frozen=True, kw_only=True):
    """Budget leases (policy/leases.py): the router holds one lease per (tier, provider,
    model, client key) and draws each paid attempt's worst case from it locally, instead of a
    reservation round trip per attempt. Denied: it reserves per attempt, exactly as without leases."""

    enabled: bool = True
    window: Duration = Duration(30)  # draw from a lease this long, then retire it (release what is undrawn)
    idle: Duration = Duration(10)  # ... or once nothing was drawn from it this long
    initial_draws: Annotated[int, Meta(ge=2)] = 32  # a key's first lease holds this many worst cases
    min_usd: Annotated[float, Meta(ge=0)] = 0.01  # never smaller (unless the fraction below says so)
    max_usd: Annotated[float, Meta(ge=0)] = 5.0  # never larger; a lease that was used up doubles up to this
    fraction: Annotated[float, Meta(gt=0, le=1)] = 0.1  # of what is left under the tightest hard cap
    backoff: Duration = Duration(5)  # after a denied lease: per-attempt reservations only, this long


class BudgetsCfg(Cfg, frozen=True, kw_only=True):
    limits: list[BudgetLimitCfg] = []
    spike: SpikeCfg = SpikeCfg()
    local_cost: LocalCostCfg = LocalCostCfg()
    timezone: str = "UTC"  # where "daily" starts
    # The LEDGER stream keeps this (> a month: monthly budgets) unless its bytes run short first: from half
    # its share of bus.streams.max_bytes on, the guard compacts it (actors/budget_guard/compaction.py).
    ledger_history: Duration = Duration(40 * 86400)
    # The budget_guard folds LEDGER into a snapshot this often: a restart reads the snapshot + the entries
    # after it, and history past ledger_history lives on in the snapshot.
    snapshot_every: Duration = Duration(3600)
    reservation_ttl: Duration = Duration(300)  # a reservation without a deadline expires after this
    reservation_grace: Duration = Duration(30)  # ... and one with a deadline this long after it
    require_reservation: bool = True  # no budget_guard answers: True refuses paid attempts, False lets them go
    # One budget_guard writes the ledger: it holds a lease in KV orch_locks that lapses this long after its
    # last renewal (a standby takes over then); see bus/lease.py.
    writer_lease: Duration = Duration(15)
    # Every hold is bounded: at most this long past now (a deadline further out is cut to it) ...
    max_hold: Duration = Duration(2 * 3600)
    # ... and at most this much money (None: no bound beyond the hard limits).
    max_hold_usd: Annotated[float, Meta(gt=0)] | None = 50.0
    leases: LeaseCfg = LeaseCfg()


Tiers = list[Tier]
