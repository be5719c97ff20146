"""The subject map: every subject, stream and KV bucket of the orchestra, in one place.

    orch.request.<priority>.<origin>.<id>     GenerateRequest                      stream REQUESTS
    orch.dispatch.host.<host>.<model>         Dispatch to a gpu_host               stream DISPATCH
    orch.dispatch.cloud.<provider>.<model>    Dispatch to the cloud_proxy          stream DISPATCH
    orch.result.<origin>.<id>                 the one final Outcome of a request   stream RESULTS
    orch.result.<origin>.<id>.failed          AttemptFailed (for the router)       stream RESULTS
    orch.stream.<origin>.<id>                 StreamChunk (core NATS, not stored)
    orch.event.<kind>                         Event (kind has dots: model.loaded)  stream EVENTS
    orch.event.model.<what>                   a gpu_host's models: loaded, unloaded, swap, keep_alive,
                                              load_failed (and orch.event.oom)
    orch.cmd.host.<host>.<verb>               host load / unload / swap            stream COMMANDS
    orch.cmd.tier.<tier> | orch.cmd.phase | orch.cmd.rotate | orch.cmd.router.overflow | orch.cmd.alert.ack
    orch.cmd.review.decide                    an operator's review decision (the operator only)
    orch.dlq.<stream>                         dead letters, with the reason         stream DEADLETTER
    orch.svc.<service>                        request/reply services (core NATS)
    orch.ledger.<kind>                        budget_guard's spend ledger entries  stream LEDGER (its own)
    orch.ledgersnap.part | .done              budget_guard's ledger snapshots      stream LEDGER_SNAPSHOTS (its own)

``<origin>`` says who asked: ``gw`` (the gateway, on behalf of an HTTP key it checked), ``op`` (the operator
CLI), ``mon`` (the diversity_monitor's evaluation requests) or the name of a client (a training job with
its own NATS identity). NATS permissions let each publisher use only its own origin and let a client read
only its own results and chunks, so the origin in a subject is authenticated: the router takes a client's
identity from it, never from the body.

Model names may hold characters that subjects and KV keys cannot ('.', ':', '+'): ``token`` and
``kv_key`` escape them reversibly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from bus.wildcards import subject_matches, subjects_overlap
from schemas.base import Priority, Tier
from schemas.commands import (
    AckAlert,
    Command,
    DecideReview,
    LoadModel,
    Rotate,
    SetOverflow,
    SetPhase,
    SetTier,
    SwapModels,
    UnloadModel,
)
from schemas.events import Event, event_kind

__all__ = ["subject_matches", "subjects_overlap"]  # re-exported: callers match subjects through this module

PREFIX = "orch"

# --- escaping ------------------------------------------------------------------------------------
_TOKEN_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_KEY_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def token(name: str) -> str:
    """A subject token for any name: characters other than [A-Za-z0-9_-] become ~XX (hex)."""
    return _TOKEN_SAFE.sub(lambda m: "".join(f"~{b:02x}" for b in m.group().encode()), name)


def untoken(tok: str) -> str:
    return re.sub(r"(?:~[0-9a-f]{2})+", lambda m: bytes.fromhex(m.group().replace("~", "")).decode(), tok)


def kv_key(name: str) -> str:
    """A KV key for any name: characters other than [A-Za-z0-9_.-] become =XX (hex)."""
    return _KEY_SAFE.sub(lambda m: "".join(f"={b:02x}" for b in m.group().encode()), name)


def un_kv_key(key: str) -> str:
    return re.sub(r"(?:=[0-9a-f]{2})+", lambda m: bytes.fromhex(m.group().replace("=", "")).decode(), key)


# --- subjects ------------------------------------------------------------------------------------
REQUEST_ALL = f"{PREFIX}.request.>"
DISPATCH_ALL = f"{PREFIX}.dispatch.>"
DISPATCH_HOSTS = f"{PREFIX}.dispatch.host.>"
DISPATCH_CLOUD = f"{PREFIX}.dispatch.cloud.>"
RESULT_ALL = f"{PREFIX}.result.>"
RESULT_FINAL = f"{PREFIX}.result.*.*"
RESULT_FAILED = f"{PREFIX}.result.*.*.failed"
STREAM_ALL = f"{PREFIX}.stream.*.*"
EVENT_ALL = f"{PREFIX}.event.>"
EVENT_MODEL = f"{PREFIX}.event.model.>"  # model.loaded / unloaded / swap / keep_alive / load_failed
EVENT_OOM = f"{PREFIX}.event.oom"
COMMAND_ALL = f"{PREFIX}.cmd.>"
DLQ_ALL = f"{PREFIX}.dlq.>"

SVC_CACHE_LOOKUP = f"{PREFIX}.svc.cache.lookup"
# MiniLM sentence embeddings (served by: cache; called by: gateway for /v1/embeddings, router for consensus)
SVC_CACHE_EMBED = f"{PREFIX}.svc.cache.embed"
SVC_CLOUD_EMBED = f"{PREFIX}.svc.cloud.embed"  # cloud embedding models (served by: cloud_proxy; called by: gateway)
SVC_BUDGET_RESERVE = f"{PREFIX}.svc.budget.reserve"
SVC_BUDGET_RELEASE = f"{PREFIX}.svc.budget.release"
SVC_BUDGET_SUMMARY = f"{PREFIX}.svc.budget.summary"
ROTATOR_COMMANDS = (f"{PREFIX}.cmd.phase", f"{PREFIX}.cmd.rotate")  # SetPhase, Rotate: the rotator's
ROUTER_COMMANDS = f"{PREFIX}.cmd.router.>"  # SetOverflow
ROUTER_OVERFLOW = f"{PREFIX}.cmd.router.overflow"  # SetOverflow's own subject
ALERT_COMMANDS = f"{PREFIX}.cmd.alert.>"  # AckAlert
ALERT_ACK = f"{PREFIX}.cmd.alert.ack"  # AckAlert's own subject
REVIEW_COMMANDS = f"{PREFIX}.cmd.review.>"  # DecideReview: the operator's only (no actor role publishes it)
LEDGER_ALL = f"{PREFIX}.ledger.>"  # budget_guard's own stream (declared by the actor, not in STREAMS)
LEDGER_STREAM = "LEDGER"
# budget_guard's ledger snapshots (its own stream): parts on .part, then a manifest on .done
LEDGER_SNAP_ALL = f"{PREFIX}.ledgersnap.>"
LEDGER_SNAP_PART = f"{PREFIX}.ledgersnap.part"
LEDGER_SNAP_DONE = f"{PREFIX}.ledgersnap.done"
LEDGER_SNAP_STREAM = "LEDGER_SNAPSHOTS"


# --- origins -------------------------------------------------------------------------------------
ORIGIN_GATEWAY = "gw"  # requests relayed by the gateway: client_key is the HTTP key the gateway checked
ORIGIN_OPERATOR = "op"  # the operator CLI (and tests acting as the operator)
ORIGIN_MONITOR = "mon"  # the diversity_monitor's own requests: evaluators grading sampled results
RESERVED_ORIGINS = frozenset({ORIGIN_GATEWAY, ORIGIN_OPERATOR, ORIGIN_MONITOR})
_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_client_name(name: str) -> str:
    """A client's name is its origin token and its NATS user (``client-<name>``): short, lower case, no dots."""
    if not _CLIENT_NAME.match(name) or name in RESERVED_ORIGINS:
        raise ValueError(
            f"client name {name!r}: use 1-32 of a-z 0-9 _ - (starting with a letter or digit), not 'gw', 'op' or 'mon'"
        )
    return name


def request(priority: Priority, request_id: str, origin: str = ORIGIN_OPERATOR) -> str:
    return f"{PREFIX}.request.{priority}.{origin}.{request_id}"


def request_priority(priority: Priority) -> str:
    return f"{PREFIX}.request.{priority}.*.*"


def requests_of(origin: str) -> str:
    return f"{PREFIX}.request.*.{origin}.*"


def answers_of(origin: str) -> str:
    """Results and chunks of one origin, on one subscription (their order is kept)."""
    return f"{PREFIX}.*.{origin}.*"


def results_of(origin: str) -> str:
    return f"{PREFIX}.result.{origin}.*"


def chunks_of(origin: str) -> str:
    return f"{PREFIX}.stream.{origin}.*"


def dispatch_host(host: str, model: str) -> str:
    return f"{PREFIX}.dispatch.host.{host}.{token(model)}"


def dispatch_host_all(host: str) -> str:
    return f"{PREFIX}.dispatch.host.{host}.>"


def dispatch_cloud(provider: str, model: str) -> str:
    return f"{PREFIX}.dispatch.cloud.{provider}.{token(model)}"


def result(request_id: str, origin: str = ORIGIN_OPERATOR) -> str:
    return f"{PREFIX}.result.{origin}.{request_id}"


def attempt_failed(request_id: str, origin: str = ORIGIN_OPERATOR) -> str:
    return f"{PREFIX}.result.{origin}.{request_id}.failed"


def chunks(request_id: str, origin: str = ORIGIN_OPERATOR) -> str:
    return f"{PREFIX}.stream.{origin}.{request_id}"


# --- parsers: the only place that reads tokens out of a subject ----------------------------------
class RequestSubject(msgspec.Struct, frozen=True):  # a Struct: ~7x cheaper to build than a dataclass (hot path)
    priority: str
    origin: str
    request_id: str


class AnswerSubject(msgspec.Struct, frozen=True):  # built for every answer a gateway or router hears
    kind: str  # "result", "failed" or "stream"
    origin: str
    request_id: str


def parse_request(subject: str) -> RequestSubject | None:
    """``orch.request.<priority>.<origin>.<id>``; None for anything else."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != PREFIX or parts[1] != "request":
        return None
    return RequestSubject(priority=parts[2], origin=parts[3], request_id=parts[4])


def parse_answer(subject: str) -> AnswerSubject | None:
    """``orch.result.<origin>.<id>`` / ``orch.result.<origin>.<id>.failed`` / ``orch.stream.<origin>.<id>``."""
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != PREFIX:
        return None
    if parts[1] == "result" and len(parts) == 4:
        return AnswerSubject("result", parts[2], parts[3])
    if parts[1] == "result" and len(parts) == 5 and parts[4] == "failed":
        return AnswerSubject("failed", parts[2], parts[3])
    if parts[1] == "stream" and len(parts) == 4:
        return AnswerSubject("stream", parts[2], parts[3])
    return None


def area(subject: str) -> str:
    """The kind of an orchestra subject: ``request``, ``dispatch``, ``result``, ``stream``, ``event``,
    ``cmd``, ``dlq``, ``svc``, ``ledger``...; "" for a subject outside the orchestra."""
    head, _, rest = subject.partition(".")
    return rest.partition(".")[0] if head == PREFIX and rest else ""


def is_dispatch(subject: str) -> bool:
    return subject.startswith(_DISPATCH)


def is_chunks(subject: str) -> bool:
    """``orch.stream.<origin>.<id>``: a token chunk (everything else on an answers subscription is an outcome)."""
    return subject.startswith(_CHUNKS)


def is_attempt_failed(subject: str) -> bool:
    return subject.startswith(_RESULT) and subject.endswith(".failed")


def answer_id(subject: str) -> str:
    """The request id of ``orch.result.<origin>.<id>`` or ``orch.stream.<origin>.<id>`` (its last token)."""
    return subject[subject.rfind(".") + 1 :]


_DISPATCH, _CHUNKS, _RESULT = f"{PREFIX}.dispatch.", f"{PREFIX}.stream.", f"{PREFIX}.result."


def event(ev: Event) -> str:
    return event_of(event_kind(ev))


def event_of(kind: str) -> str:
    """``orch.event.<kind>`` for a kind (``phase.changed``) or a pattern of kinds (``alert.>``)."""
    return f"{PREFIX}.event.{kind}"


# what the alert feed shows (the monitor's board and ``orchestra monitor alerts``)
ALERT_FEED = (event_of("alert.>"), event_of("remediation"), event_of("notified"))
REVIEW_EVENTS = (event_of("ensemble.escalated"), event_of("validation.>"))  # what fills the review queue


def ledger(kind: str) -> str:
    """``orch.ledger.<kind>``: one subject per ledger entry kind (its tag)."""
    return f"{PREFIX}.ledger.{kind}"


def service_status(actor: str) -> str:
    return f"{PREFIX}.svc.status.{actor}"


def host_commands(host: str) -> str:
    return f"{PREFIX}.cmd.host.{host}.>"


def command(cmd: Command) -> str:
    """The subject a command is published on, derived from the command itself."""
    match cmd:
        case LoadModel(host=host):
            return f"{PREFIX}.cmd.host.{host}.load"
        case UnloadModel(host=host):
            return f"{PREFIX}.cmd.host.{host}.unload"
        case SwapModels(host=host):
            return f"{PREFIX}.cmd.host.{host}.swap"
        case SetTier(tier=tier):
            return f"{PREFIX}.cmd.tier.{tier}"
        case SetPhase():
            return f"{PREFIX}.cmd.phase"
        case Rotate():
            return f"{PREFIX}.cmd.rotate"
        case SetOverflow():
            return ROUTER_OVERFLOW
        case AckAlert():
            return ALERT_ACK
        case DecideReview():
            return f"{PREFIX}.cmd.review.decide"
    raise ValueError(f"no subject for command {type(cmd).__name__}")


def tier_commands(tier: Tier | None = None) -> str:
    return f"{PREFIX}.cmd.tier.{tier or '*'}"


def dead_letter(stream: str) -> str:
    return f"{PREFIX}.dlq.{stream}"


# --- topology ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """One stream and its limits, chosen for what it holds.

    ``max_age``: seconds kept (None: ``bus.streams.history``). ``share``: its part of
    ``bus.streams.max_bytes``, the disk the orchestra's streams may use together (None: no byte limit).
    ``discard`` says what happens at a limit: ``old`` drops the oldest messages (history that is only
    for `orchestra audit`; a request in flight is minutes old, far from the oldest), ``new`` refuses the
    write, loudly, and drops nothing (the LEDGER: money is never trimmed from under the budget_guard;
    its history past retention lives on in the ledger snapshots)."""

    name: str
    subjects: list[str]
    description: str = ""
    max_msgs_per_subject: int = -1
    max_age: float | None = None  # seconds; None: bus.streams.history
    share: float | None = None  # of bus.streams.max_bytes; None: no byte limit
    discard: Literal["old", "new"] = "old"


@dataclass(frozen=True)
class KVSpec:
    bucket: str
    description: str = ""
    history: int = 1
    ttl: float | None = None  # seconds; None: keep
    extra: dict[str, object] = field(default_factory=dict)


REQUESTS_STREAM, DISPATCH_STREAM, RESULTS_STREAM = "REQUESTS", "DISPATCH", "RESULTS"
EVENTS_STREAM, COMMANDS_STREAM, DEADLETTER_STREAM = "EVENTS", "COMMANDS", "DEADLETTER"

# Shares of bus.streams.max_bytes (LEDGER and LEDGER_SNAPSHOTS take theirs from it too: 0.15 + 0.05).
STREAMS: list[StreamSpec] = [
    StreamSpec(REQUESTS_STREAM, [REQUEST_ALL], "generation requests, Msg-Id = request id", share=0.15),
    StreamSpec(DISPATCH_STREAM, [DISPATCH_ALL], "routed requests to gpu_hosts and the cloud_proxy", share=0.15),
    StreamSpec(RESULTS_STREAM, [RESULT_ALL], "final outcomes (Msg-Id = request id) and failed attempts", share=0.25),
    StreamSpec(EVENTS_STREAM, [EVENT_ALL], "everything that happened", share=0.15),
    StreamSpec(COMMANDS_STREAM, [COMMAND_ALL], "load/unload/swap, tier, phase, overflow, alert ack", share=0.03),
    StreamSpec(DEADLETTER_STREAM, [DLQ_ALL], "messages that could not be handled, with the reason", share=0.07),
]
LEDGER_SHARE = 0.15
LEDGER_SNAP_SHARE = 0.05

KV_HOSTS = "orch_hosts"
KV_TIERS = "orch_tiers"
KV_PHASE = "orch_phase"
KV_PROVIDERS = "orch_providers"
KV_QUEUES = "orch_queues"
KV_KEY_USAGE = "orch_key_usage"
KV_CACHE = "orch_cache"  # declared by the cache actor (its TTL is the cache's): cached answers
KV_CACHE_PENDING = "orch_cache_pending"  # declared by the cache actor: misses awaiting their result
KV_LOCKS = "orch_locks"  # declared by singleton actors: who holds the single-writer lease (budget_guard)
KV_REVIEWS = "orch_reviews"  # the review queue: escalated requests and their decisions
KV_QUALITY = "orch_quality"  # measured quality per model (premium agreement, review decisions)
KV_OVERFLOW = "orch_overflow"  # local work sent to a cloud tier, per model ('*': all), from SetOverflow

BUCKETS: list[KVSpec] = [
    KVSpec(KV_HOSTS, "gpu_host state: loaded models, memory, queue depth (writer: each gpu_host)"),
    KVSpec(KV_TIERS, "tier enabled/disabled (writer: budget_guard)"),
    KVSpec(KV_PHASE, "the current training phase (writer: rotator)"),
    KVSpec(KV_PROVIDERS, "cloud provider availability and cooldowns (writer: cloud_proxy)"),
    KVSpec(KV_QUEUES, "pending work per target (writer: router)"),
    KVSpec(
        KV_KEY_USAGE,
        "per client key: requests and tokens this minute, requests in flight (writer: gateway, by compare-and-set)",
        ttl=86_400.0,
    ),
    KVSpec(KV_REVIEWS, "the review queue: escalated requests, pending or decided (writer: diversity_monitor)"),
    KVSpec(KV_QUALITY, "measured quality per model, read by the router (writer: diversity_monitor)"),
    KVSpec(KV_OVERFLOW, "overflow switches per local model, read by the router and the monitor (writer: rotator)"),
]


def find_overlaps(specs: list[StreamSpec]) -> list[tuple[str, str, str, str]]:
    """Pairs of (stream, subject, stream, subject) whose subjects overlap; JetStream refuses those."""
    found = []
    for i, s1 in enumerate(specs):
        for s2 in specs[i + 1 :]:
            for a in s1.subjects:
                for b in s2.subjects:
                    if subjects_overlap(a, b):
                        found.append((s1.name, a, s2.name, b))
    return found
