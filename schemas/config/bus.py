"""bus: where NATS is, how to authenticate, how long history is kept."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schemas.config.base import Cfg
from schemas.config.units import ByteSize, Duration


class NatsAuthCfg(Cfg, frozen=True, kw_only=True):
    """Credentials come from files or the environment, never from the YAML itself.

    By default every process finds its own role's generated credentials in ``credentials_dir``
    (``<data_dir>/auth/<role>.json``; ``orchestra up`` creates them on first start, bus/credentials.py).
    ``user``/``password_env``, ``token_env`` or ``creds_file`` instead name one explicit identity (a lab
    that runs its own users or NATS accounts); ``credentials_dir: null`` with none of them connects
    anonymously, which only a server without authentication accepts."""

    credentials_dir: str | None = "auth"  # under data_dir unless absolute
    user: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    creds_file: str | None = None


class NatsTlsCfg(Cfg, frozen=True, kw_only=True):
    """TLS on the bus. Clients verify the server against ``ca_file`` and, for mutual TLS, present
    ``cert_file``/``key_file``. The embedded server serves ``server_cert_file``/``server_key_file`` and,
    with ``verify_clients``, accepts only clients whose certificate ``ca_file`` signed."""

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_cert_file: str | None = None
    server_key_file: str | None = None
    verify_clients: bool = False


class EmbeddedNatsCfg(Cfg, frozen=True, kw_only=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 4222
    store_dir: str = "nats"  # under data_dir unless absolute
    max_payload: ByteSize = ByteSize(4 * 2**20)
    # Go threads for the server (GOMAXPROCS). None: a quarter of the CPUs, at least 1 — the embedded
    # server shares the machine with every actor, and an idle Go scheduler spinning on spare threads
    # takes CPU the actors need (measured in docs/benchmarks.md). A GOMAXPROCS in the environment wins.
    gomaxprocs: Annotated[int, Meta(ge=1)] | None = None


class StreamsCfg(Cfg, frozen=True, kw_only=True):
    history: Duration = Duration(7 * 86400)  # every stream keeps this much, for `orchestra audit`
    dedupe_window: Duration = Duration(600)  # >= router.max_deadline (config check)
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    storage: Literal["file", "memory"] = "file"
    # The disk all streams may use together; each takes its share (bus/subjects.py StreamSpec.share).
    # None: no byte limit (a full disk then stops everything).
    max_bytes: ByteSize | None = ByteSize(8 * 2**30)


class ConsumerDefaultsCfg(Cfg, frozen=True, kw_only=True):
    ack_wait: Duration = Duration(30)
    max_deliver: Annotated[int, Meta(ge=1)] = 5
    nak_delay: Duration = Duration(1)


class BusCfg(Cfg, frozen=True, kw_only=True):
    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    embedded: EmbeddedNatsCfg = EmbeddedNatsCfg()
    auth: NatsAuthCfg = NatsAuthCfg()
    tls: NatsTlsCfg = NatsTlsCfg()
    streams: StreamsCfg = StreamsCfg()
    consumers: ConsumerDefaultsCfg = ConsumerDefaultsCfg()
    connect_timeout: Duration = Duration(2)
    reconnect_wait: Duration = Duration(1)
    max_reconnect_wait: Duration = Duration(10)
    shutdown_grace: Duration = Duration(5)  # in-flight work gets this long on SIGTERM
