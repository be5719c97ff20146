"""Who may do what on the bus: every role's NATS permissions, generated from one declaration.

The declaration below names, for each role, the subjects of :mod:`bus.subjects` it publishes, the
streams it reads, the KV buckets it writes and reads, the services it serves and calls. ``grants``
turns that into nats-server ``publish`` / ``subscribe`` allow-lists, JetStream API subjects included,
and :mod:`bus.server` writes them into the embedded server's config (a lab renders the same users for
its cluster). Nothing is kept by hand in two places; ``tests/unit/test_permissions.py`` checks that every
subject, stream and bucket of the topology has an owner here.

    roles                         writes (only it)                          reads
    gateway                       orch.request.*.gw.*                       its answers orch.*.gw.*
    router                        orch.dispatch.>, outcomes, orch_queues    REQUESTS, RESULTS, DISPATCH, KV
    gpu_host / cloud_proxy        outcomes, failures, chunks; orch_hosts /  DISPATCH, COMMANDS (hosts), RESULTS;
                                  orch_providers                            cloud_proxy serves cloud embeddings
    cache                         orch_cache, orch_cache_pending            RESULTS; serves cache lookups
    budget_guard                  LEDGER, LEDGER_SNAPSHOTS, orch_tiers,     RESULTS, COMMANDS; serves budgets
                                  orch_locks, tier cmds
    rotator                       host + overflow commands, orch_phase,     COMMANDS, EVENTS, KV
                                  orch_overflow
    diversity_monitor             host/tier/overflow commands, orch_reviews,  RESULTS, EVENTS, COMMANDS, KV
                                  orch_quality, orch.request.*.mon.* (its     (its verdicts: RESULTS)
                                  evaluation requests)
    operator (the CLI)            everything; the only one that purges, deletes or reconfigures streams,
                                  and the only one that decides reviews (orch.cmd.review.>)
    client-<name> (training job)  orch.request.*.<name>.*                   orch.result.<name>.*, orch.stream.<name>.*

Every actor publishes events and dead letters. Each connection's inbox is ``_INBOX.<user>``, and a user
may subscribe only to its own, so no one reads another's replies. A role that serves request/reply
services answers through ``allow_responses`` (only to the inbox of a request it received).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus import subjects as s

OPERATOR = "operator"
CLIENT_PREFIX = "client-"
ACTOR_ROLES = (
    "gateway",
    "router",
    "gpu_host",
    "cloud_proxy",
    "cache",
    "budget_guard",
    "rotator",
    "diversity_monitor",
)
ROLES = (*ACTOR_ROLES, OPERATOR)

TOPOLOGY_STREAMS = tuple(spec.name for spec in s.STREAMS)
TOPOLOGY_BUCKETS = tuple(spec.bucket for spec in s.BUCKETS)


@dataclass(frozen=True)
class Role:
    """What one role does on the bus, in the subject map's terms."""

    name: str
    publishes: tuple[str, ...] = ()  # subjects it publishes (stored ones are JetStream publishes)
    subscribes: tuple[str, ...] = ()  # core subscriptions
    reads: tuple[str, ...] = ()  # streams it consumes or reads messages of
    kv_writes: tuple[str, ...] = ()  # buckets it writes (it is their one writer)
    kv_reads: tuple[str, ...] = ()  # buckets it reads or watches
    serves: tuple[str, ...] = ()  # request/reply services it answers
    calls: tuple[str, ...] = ()  # request/reply services it asks
    owns_streams: tuple[str, ...] = ()  # streams it may reconfigure (besides KV_<bucket> of kv_writes)
    purges: tuple[str, ...] = ()  # streams of its own it may purge (old ledger snapshots)
    provisions: bool = True  # may create the topology's streams and buckets when missing


ACTOR_COMMON = (s.EVENT_ALL, s.DLQ_ALL)
ANSWERS = (s.RESULT_FINAL, s.RESULT_FAILED, s.STREAM_ALL)

DECLARATION: tuple[Role, ...] = (
    Role(
        "gateway",
        publishes=(s.requests_of(s.ORIGIN_GATEWAY), *ACTOR_COMMON),
        subscribes=(s.answers_of(s.ORIGIN_GATEWAY),),
        kv_writes=(s.KV_KEY_USAGE,),  # per-key rate and concurrency counts, shared by every gateway
        kv_reads=TOPOLOGY_BUCKETS,
        calls=(s.SVC_CACHE_EMBED, s.SVC_CLOUD_EMBED),  # /v1/embeddings: MiniLM (cache), cloud models
    ),
    Role(
        "router",
        publishes=(s.DISPATCH_ALL, s.RESULT_FINAL, *ACTOR_COMMON),
        subscribes=(s.RESULT_FINAL, s.RESULT_FAILED),
        reads=("REQUESTS", "RESULTS", "DISPATCH"),  # DISPATCH: its consumers' backlog; overflow: orch_overflow
        kv_writes=(s.KV_QUEUES,),
        kv_reads=TOPOLOGY_BUCKETS,
        # SVC_CACHE_EMBED: MiniLM vectors for the ensemble's consensus (actors/router/ensemble.py)
        calls=(s.SVC_CACHE_LOOKUP, s.SVC_CACHE_EMBED, s.SVC_BUDGET_RESERVE, s.SVC_BUDGET_RELEASE, s.SVC_BUDGET_SUMMARY),
    ),
    Role(
        "gpu_host",
        publishes=(*ANSWERS, *ACTOR_COMMON),
        reads=("DISPATCH", "COMMANDS", "RESULTS"),
        kv_writes=(s.KV_HOSTS,),
        kv_reads=TOPOLOGY_BUCKETS,
    ),
    Role(
        "cloud_proxy",
        publishes=(*ANSWERS, *ACTOR_COMMON),
        reads=("DISPATCH", "RESULTS"),
        kv_writes=(s.KV_PROVIDERS,),
        kv_reads=TOPOLOGY_BUCKETS,
        serves=(s.SVC_CLOUD_EMBED,),  # cloud embeddings: held and charged like a generation
        calls=(s.SVC_BUDGET_RESERVE, s.SVC_BUDGET_RELEASE),
    ),
    Role(
        "cache",
        publishes=ACTOR_COMMON,
        reads=("RESULTS",),
        kv_writes=(s.KV_CACHE, s.KV_CACHE_PENDING),
        kv_reads=TOPOLOGY_BUCKETS,
        serves=(s.SVC_CACHE_LOOKUP, s.SVC_CACHE_EMBED),
    ),
    Role(
        "budget_guard",
        publishes=(s.LEDGER_ALL, s.LEDGER_SNAP_ALL, s.tier_commands(), *ACTOR_COMMON),
        reads=("RESULTS", "COMMANDS", s.LEDGER_STREAM, s.LEDGER_SNAP_STREAM),
        kv_writes=(s.KV_TIERS, s.KV_LOCKS),
        kv_reads=TOPOLOGY_BUCKETS,
        serves=(s.SVC_BUDGET_RESERVE, s.SVC_BUDGET_RELEASE, s.SVC_BUDGET_SUMMARY),
        owns_streams=(s.LEDGER_STREAM, s.LEDGER_SNAP_STREAM),
        purges=(s.LEDGER_STREAM, s.LEDGER_SNAP_STREAM),
    ),
    Role(
        "rotator",
        publishes=(s.host_commands("*"), s.ROUTER_COMMANDS, *s.ROTATOR_COMMANDS, *ACTOR_COMMON),
        subscribes=(s.EVENT_MODEL, s.EVENT_OOM),  # model and oom events as they happen (core NATS)
        reads=("COMMANDS", "EVENTS", "RESULTS"),
        kv_writes=(s.KV_PHASE, s.KV_OVERFLOW),  # orch_overflow: the one handler of SetOverflow
        kv_reads=TOPOLOGY_BUCKETS,
        calls=(s.SVC_BUDGET_SUMMARY,),
    ),
    Role(
        "diversity_monitor",
        publishes=(
            s.host_commands("*"),
            s.tier_commands(),
            s.ROUTER_COMMANDS,
            s.ALERT_COMMANDS,
            s.requests_of(s.ORIGIN_MONITOR),  # evaluation requests (phase 3's grading); verdicts read from RESULTS
            *ACTOR_COMMON,
        ),
        reads=TOPOLOGY_STREAMS,  # the observer: metrics, and the dashboard's audit timeline of a request
        kv_writes=(s.KV_REVIEWS, s.KV_QUALITY),  # the review queue; measured quality per model
        kv_reads=TOPOLOGY_BUCKETS,
        calls=(s.SVC_BUDGET_SUMMARY,),
    ),
)

_BY_NAME = {role.name: role for role in DECLARATION}


@dataclass(frozen=True)
class Grants:
    """nats-server permissions of one user."""

    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    allow_responses: bool = False
    everything: bool = False  # the operator: no restriction

    def as_config(self) -> dict[str, object]:
        if self.everything:
            return {}
        perms: dict[str, object] = {
            "publish": {"allow": sorted(set(self.publish))},
            "subscribe": {"allow": sorted(set(self.subscribe))},
        }
        if self.allow_responses:
            perms["allow_responses"] = True
        return perms


def inbox_prefix(user: str) -> str:
    """The inbox prefix a user's connection uses (nats-py ``inbox_prefix``): only it may read there."""
    return f"_INBOX.{user}"


def client_user(name: str) -> str:
    return CLIENT_PREFIX + s.check_client_name(name)


def _read_stream(stream: str) -> list[str]:
    """Reading a stream: its info, message gets, and consumers of its own (pull or push, acked or not)."""
    api = "$JS.API"
    return [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"{api}.CONSUMER.DELETE.{stream}.>",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.>",
        f"{api}.CONSUMER.LIST.{stream}",
        f"{api}.CONSUMER.NAMES.{stream}",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def grants(role: str) -> Grants:
    """The permissions of an actor role, of the operator, or of ``client-<name>``."""
    if role == OPERATOR:
        return Grants(everything=True)
    if role.startswith(CLIENT_PREFIX):
        return client_grants(role[len(CLIENT_PREFIX) :])
    decl = _BY_NAME.get(role)
    if decl is None:
        raise ValueError(f"no such role {role!r} (have: {', '.join(ROLES)}, client-<name>)")
    pub: list[str] = list(decl.publishes) + list(decl.calls)
    sub: list[str] = list(decl.subscribes) + list(decl.serves) + [inbox_prefix(role) + ".>"]
    pub += ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"]
    if decl.provisions:  # create when missing; a stream that exists with another config is left alone
        pub += [f"$JS.API.STREAM.INFO.{name}" for name in (*TOPOLOGY_STREAMS, *map(kv_stream, TOPOLOGY_BUCKETS))]
        pub += [f"$JS.API.STREAM.CREATE.{name}" for name in (*TOPOLOGY_STREAMS, *map(kv_stream, TOPOLOGY_BUCKETS))]
    owned = [*decl.owns_streams, *map(kv_stream, decl.kv_writes)]
    pub += [f"$JS.API.STREAM.{verb}.{name}" for name in owned for verb in ("INFO", "CREATE", "UPDATE")]
    pub += [f"$JS.API.STREAM.PURGE.{name}" for name in decl.purges]
    for stream in decl.reads:
        pub += _read_stream(stream)
    for bucket in {*decl.kv_reads, *decl.kv_writes}:
        pub += _read_stream(kv_stream(bucket))
    for bucket in decl.kv_writes:
        pub.append(f"$KV.{bucket}.>")
    return Grants(publish=pub, subscribe=sub, allow_responses=bool(decl.serves))


def client_grants(name: str) -> Grants:
    """A training job: publish its own requests, read its own answers, nothing else."""
    name = s.check_client_name(name)
    user = CLIENT_PREFIX + name
    return Grants(
        publish=[s.requests_of(name), f"$JS.API.DIRECT.GET.RESULTS.{s.results_of(name)}"],
        subscribe=[s.results_of(name), s.chunks_of(name), inbox_prefix(user) + ".>"],
    )


def owners() -> dict[str, set[str]]:
    """Each published subject pattern and each KV bucket -> the roles that write it (for checks and docs)."""
    found: dict[str, set[str]] = {}
    for decl in DECLARATION:
        for subject in decl.publishes:
            found.setdefault(subject, set()).add(decl.name)
        for bucket in decl.kv_writes:
            found.setdefault(f"$KV.{bucket}", set()).add(decl.name)
    return found
