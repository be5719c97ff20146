"""Fixtures: a real nats-server with JetStream per test (random port, temp store, ~20 ms) that requires
authentication with the generated per-role permissions, as the embedded default does, and a
session-wide watch that fails the run when a test secret reaches a log line (tests/support/leaks.py).

Actors started from a profile (``profile``, ``cfg``, ``write_profile``) find their role's credentials;
``nc`` is the operator. A permission violation logged by the server fails the test that caused it
(an actor missing a permission would otherwise only show as a timeout), unless the test is marked
``expect_violations`` (the forgery tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from bus.server import EmbeddedNats
from schemas.config import OrchestraConfig
from tests.support.actors import Actors
from tests.support.leaks import LeakWatch
from tests.support.procs import ActorProcess, stop_processes
from tests.support.profile import register_server, test_config, write_profile

# The suite-level watchdog (tests/support/watchdog.py): no failure can hang `make test`.
pytest_plugins = ["tests.support.watchdog"]


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Every log record of the run, and every actor process's log file, is checked for the secrets
    the tests configure; one found fails the run at its end, naming where."""
    watch = LeakWatch()
    root = logging.getLogger()
    root.addHandler(watch)
    yield
    root.removeHandler(watch)
    leaks = watch.report()
    assert not leaks, "test secrets reached the logs:\n" + "\n".join(leaks[:20])


@pytest.fixture
def nats_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(store_dir=tmp_path / "nats", port=0, auth_dir=tmp_path / "auth")
    server.start()
    register_server(server)
    yield server
    server.stop()
    if request.node.get_closest_marker("expect_violations") is None:
        assert not server.violations, "permission violations on the bus:\n" + "\n".join(server.violations[:10])


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, **nats_server.connect_options()
    )
    yield conn
    await conn.close()


@pytest.fixture
def profile(tmp_path: Path, nats_server: EmbeddedNats) -> Path:
    """A copy of the local profile pointing at this test's nats-server."""
    return write_profile(tmp_path / "profile", nats_server.url)


@pytest.fixture
def cfg(tmp_path: Path, nats_server: EmbeddedNats) -> OrchestraConfig:
    return test_config(tmp_path / "profile", nats_server.url)


@pytest.fixture
async def actors(tmp_path: Path, nats_server: EmbeddedNats, nc: NATS) -> AsyncIterator[Actors]:
    """The one actor fixture (tests/support/actors.py): profiles for this test's nats-server, actors started
    in this process or as processes, all stopped when the test ends."""
    running = Actors(nc, nats_server, tmp_path)
    yield running
    await running.stop_all()


@pytest.fixture
def processes() -> Iterator[list[ActorProcess]]:
    """Processes a test starts itself without the test's nats-server (``actors.process`` otherwise); stopped
    by PID when it ends."""
    started: list[ActorProcess] = []
    yield started
    stop_processes(started)
