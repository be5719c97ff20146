"""Live state records kept in JetStream KV buckets. Each bucket has exactly one writing actor.

bucket        key            record         writer
orch_hosts    <host>         HostState      that gpu_host
orch_tiers    <tier>         TierState      budget_guard (commands from operators / monitor)
orch_phase    current        PhaseState     rotator
orch_provider <provider>     ProviderState  cloud_proxy
orch_queues   <target>       QueueState     router
orch_key_usage <key id>      KeyUsage       gateway (every instance, by compare-and-set)
orch_overflow <model>|*      OverflowState  rotator (from SetOverflow commands: its scaling's, the monitor's)
"""

from __future__ import annotations

from schemas.base import KeepAlive, Message, Tier


class LoadedModel(Message, frozen=True, kw_only=True):
    model: str
    instance: int = 0
    bytes: int = 0
    cards: list[str] = []
    keep_alive: KeepAlive = "warm"
    loaded_at: float = 0.0
    last_used: float = 0.0
    in_flight: int = 0
    queue_depth: int = 0
    tokens_per_s: float = 0.0
    load_ms: float = 0.0
    draining: bool = False  # being unloaded: finishing its requests, taking no new ones
    card_bytes: list[int] = []  # bytes on each of ``cards`` (a split model is not always even)
    variant: str = ""  # the quantisation loaded
    bits: float = 0.0  # its bits per weight


class CardState(Message, frozen=True, kw_only=True):
    card: str
    total_bytes: int
    used_bytes: int = 0

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


class HostState(Message, frozen=True, kw_only=True):
    host: str
    up: bool = True
    cards: list[CardState] = []
    models: list[LoadedModel] = []
    heartbeat_at: float = 0.0
    started_at: float = 0.0


class TierState(Message, frozen=True, kw_only=True):
    tier: Tier
    enabled: bool = True
    reason: str = ""
    until: float | None = None
    changed_at: float = 0.0


class PhaseState(Message, frozen=True, kw_only=True):
    phase: str
    since: float = 0.0
    by: str = ""
    rotation: dict[str, list[str]] = {}  # phase group -> the rotation-pool models chosen now
    history: list[list[str]] = []  # the pool models chosen by each of the last rotations, newest last
    rotations: int = 0  # rotations since the phase began
    rotated_at: float = 0.0  # when the current rotation models were chosen


class OverflowState(Message, frozen=True, kw_only=True):
    """A local model (``*``: every local model) whose work goes to a cloud tier now; no entry: no overflow."""

    model: str | None = None  # None: all local models
    tier: Tier = "together"
    by: str = ""  # who switched it on last
    enabled_by: list[str] = []  # everyone who switched it on since it was last off (scaling undoes only its own)
    reason: str = ""
    since: float = 0.0


class ProviderState(Message, frozen=True, kw_only=True):
    provider: str
    available: bool = True
    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    p50_latency_ms: float = 0.0
    updated_at: float = 0.0
    cooling: dict[str, float] = {}  # library model -> until (epoch): deployments whose circuit is open


class QueueState(Message, frozen=True, kw_only=True):
    target: str
    depth: int = 0
    oldest_wait_s: float = 0.0
    backlog: bool = False
    updated_at: float = 0.0


class KeyUsage(Message, frozen=True, kw_only=True):
    """One client key's use in the current clock minute and its requests in flight, shared by the gateways
    (each update is a compare-and-set on the entry's revision)."""

    minute: int = 0  # epoch minute the counters belong to
    requests: int = 0
    tokens: int = 0
    inflight: dict[str, int] = {}  # gateway instance -> requests in flight
    seen: dict[str, float] = {}  # gateway instance -> its last update (a silent instance's count expires)
