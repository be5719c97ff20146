"""Connections to NATS: the first connect is retried (honcho starts processes in no order),
reconnects go on forever, and connection trouble is logged once per episode without tracebacks."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.client import Server

from bus import permissions
from bus.credentials import AuthDir
from bus.errors import ConnectError
from schemas.config.bus import BusCfg, NatsTlsCfg

log = logging.getLogger(__name__)


STARTUP_GRACE_S = 15.0  # a server that refuses connections this soon after we start is still starting


class _QuietErrors:
    """error_cb that logs a repeated error once, then a summary at most every 30 s. Before the first
    connect, a refused connection within STARTUP_GRACE_S is the server still starting (``orchestra up``
    starts every process at once): said at INFO, and a warning only if it goes on."""

    def __init__(self, name: str, level: int = logging.WARNING) -> None:
        self.name = name
        self.level = level
        self.last: str | None = None
        self.count = 0
        self.last_log = 0.0
        self.refused = False  # the server said the credentials are wrong (or there were none)
        self.born = time.monotonic()
        self.connected = False  # set once the first connect succeeded

    async def __call__(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.refused = self.refused or "authorization violation" in text.lower()
        now = time.monotonic()
        if text != self.last:
            self.last, self.count, self.last_log = text, 1, now
            starting = not self.connected and now - self.born < STARTUP_GRACE_S
            if starting and isinstance(exc, ConnectionRefusedError):
                log.log(min(self.level, logging.INFO), "%s: waiting for the nats server to start (%s)", self.name, text)
            else:
                log.log(self.level, "%s: nats connection problem: %s", self.name, text)
        else:
            self.count += 1
            if now - self.last_log > 30:
                self.last_log = now
                log.log(self.level, "%s: nats still failing (%d times): %s", self.name, self.count, text)

    def reset(self) -> None:
        self.last, self.count = None, 0


def reconnect_delay(failures: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: ``failures`` failed tries in a row wait up to
    ``base * 2**(failures-1)``, never more than ``cap``; the first try after a drop is immediate."""
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * 2 ** min(failures - 1, 30))
    return ceiling / 2 + rand() * ceiling / 2  # half fixed, half jitter: no thundering herd, no busy loop


def backoff_handler(bus: BusCfg) -> Callable[[list[Server], dict[str, Any]], tuple[Server | None, float]]:
    """nats-py's reconnect hook: the server tried least (round robin over a cluster), after a backoff
    that grows with that server's failures in a row (nats-py resets them on success)."""
    base, cap = float(bus.reconnect_wait), max(float(bus.max_reconnect_wait), float(bus.reconnect_wait))

    def choose(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        if not servers:
            return None, base
        server = min(servers, key=lambda s: s.reconnects)
        return server, reconnect_delay(server.reconnects, base, cap)

    return choose


def credentials_dir(bus: BusCfg, data_dir: str | os.PathLike[str]) -> Path | None:
    if bus.auth.credentials_dir is None:
        return None
    path = Path(bus.auth.credentials_dir)
    return path if path.is_absolute() else Path(data_dir) / path


def tls_context(tls: NatsTlsCfg) -> ssl.SSLContext | None:
    """The client side of the bus's TLS: verify the server against the CA; present a certificate for mTLS."""
    if not tls.enabled:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"bus.tls: cannot load the CA or client certificate: {exc}") from exc
    return ctx


def auth_options(bus: BusCfg, role: str = permissions.OPERATOR, data_dir: str = ".data") -> dict[str, object]:
    """Explicit credentials the config names (user + password, token or creds from the environment or a
    file); else this role's generated credentials under ``bus.auth.credentials_dir``, with its own inbox
    prefix (the only inbox its permissions let it read); else none."""
    opts: dict[str, object] = {}
    auth = bus.auth
    if not (auth.user or auth.token_env or auth.creds_file):
        folder = credentials_dir(bus, data_dir)
        if folder is not None and (folder / f"{role}.json").exists():
            creds = AuthDir(folder).load(role)
            inbox = permissions.inbox_prefix(creds.user)
            return {"user": creds.user, "password": creds.password, "inbox_prefix": inbox}
        return opts

    def secret(field: str, var: str) -> str:
        value = os.environ.get(var)
        if not value:  # never connect silently without the credentials the config asks for
            raise ConnectError(f"bus.auth.{field} names the environment variable {var}, which is not set")
        return value

    if auth.user:
        opts["user"] = auth.user
        opts["inbox_prefix"] = permissions.inbox_prefix(auth.user)
        if auth.password_env:
            opts["password"] = secret("password_env", auth.password_env)
    if auth.token_env:
        opts["token"] = secret("token_env", auth.token_env)
    if auth.creds_file:
        opts["user_credentials"] = auth.creds_file
    return opts


async def _wait_for_credentials(bus: BusCfg, role: str, data_dir: str, wait: float | None, level: int) -> None:
    """With an embedded server, the credentials appear when it first starts (honcho starts every process
    at once): wait for this role's file rather than connect anonymously and be refused forever."""
    folder = credentials_dir(bus, data_dir)
    if folder is None or not bus.embedded.enabled or bus.auth.user or bus.auth.token_env or bus.auth.creds_file:
        return
    path = folder / f"{role}.json"
    deadline = None if wait is None else time.monotonic() + wait
    logged = False
    while not path.exists():
        if deadline is not None and time.monotonic() > deadline:
            return  # connect anyway: the server's refusal says what is wrong
        if not logged:
            log.log(level, "waiting for this role's NATS credentials at %s (written when nats-server starts)", path)
            logged = True
        await asyncio.sleep(0.2)


def _options(bus: BusCfg, name: str, role: str, data_dir: str) -> dict[str, object]:
    """nats.connect's options: reconnect forever with backoff, keep-alive pings, this role's auth, TLS."""
    options: dict[str, object] = dict(
        servers=bus.servers,
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=float(bus.reconnect_wait),
        reconnect_to_server_handler=backoff_handler(bus),
        connect_timeout=float(bus.connect_timeout),
        ping_interval=5,
        max_outstanding_pings=3,
        **auth_options(bus, role, data_dir),
    )
    tls = tls_context(bus.tls)
    if tls is not None:
        options["tls"] = tls
    return options


def _not_connected(bus: BusCfg, role: str, data_dir: str, wait: float | None, *, refused: bool) -> ConnectError:
    """Why the first connect gave up: the server refused this role's credentials, or nobody answered."""
    if refused:
        folder = credentials_dir(bus, data_dir)
        explicit = bus.auth.user or bus.auth.token_env or bus.auth.creds_file
        where = f"{folder / (role + '.json')}" if folder is not None and not explicit else "bus.auth"
        return ConnectError(
            f"the NATS server at {', '.join(bus.servers)} refused the credentials of role {role} ({where}): "
            "is this the profile and data directory the orchestra runs with?"
        )
    return ConnectError(f"no NATS server answered at {', '.join(bus.servers)} within {wait:g}s")


async def connect(
    bus: BusCfg,
    *,
    name: str,
    role: str = permissions.OPERATOR,
    data_dir: str = ".data",
    wait: float | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    quiet: bool = False,
) -> NATS:
    """Connect as ``role`` (its credentials under ``data_dir``, see ``auth_options``), retrying the first
    connect for up to ``wait`` seconds (None: forever).
    ``quiet``: connection problems are logged at DEBUG (the CLI reports one line itself)."""
    errors = _QuietErrors(name, logging.DEBUG if quiet else logging.WARNING)

    async def error_cb(exc: Exception) -> None:  # nats-py wants a coroutine function
        await errors(exc)

    client: list[NATS] = []

    async def disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # we are closing it ourselves
        log.log(errors.level, "%s: disconnected from nats", name)
        if on_disconnect:
            await on_disconnect()

    async def reconnected() -> None:
        errors.reset()
        log.info("%s: reconnected to nats", name)
        if on_reconnect:
            await on_reconnect()

    await _wait_for_credentials(bus, role, data_dir, wait, errors.level)
    options = _options(bus, name, role, data_dir)
    options.update(error_cb=error_cb, disconnected_cb=disconnected, reconnected_cb=reconnected)
    # With max_reconnect_attempts=-1 nats-py retries the first connect too (quietly, via error_cb).
    try:
        nc = await asyncio.wait_for(nats.connect(**options), wait)  # type: ignore[arg-type]
    except TimeoutError as exc:
        raise _not_connected(bus, role, data_dir, wait, refused=errors.refused) from exc
    client.append(nc)
    errors.connected = True
    if errors.count:
        log.info("%s: connected to nats", name)
        errors.reset()
    return nc
