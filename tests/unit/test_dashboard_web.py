"""The dashboard's HTTP side without a bus: open on loopback, behind the operator token elsewhere (a cookie
set from ?token= once, or a Bearer header), the ack only with its custom header, a missing charting
library answered 404 with what to run, and the token file created 0600 and kept out of logs."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from actors.diversity_monitor.web import COOKIE, Dashboard, is_loopback, load_token
from bus.log import forget_secret, redact
from tests.support.profile import test_config

TOKEN = "test-dashboard-token-0123456789"


class Calls:
    def __init__(self) -> None:
        self.acks: list[tuple[str, str]] = []

    async def ack(self, alert_id: str, by: str) -> bool:
        self.acks.append((alert_id, by))
        return alert_id == "a1"

    async def audit(self, rid: str, at: float | None) -> list[dict[str, Any]]:
        return [{"at": 1.0, "kind": "request", "subject": f"orch.request.normal.{rid}", "text": "<b>hi</b>"}]


async def serve(token: str | None, assets: Path, calls: Calls) -> TestServer:
    board = Dashboard(
        state=lambda: {"headline": {"models_loaded": 1}},
        history=lambda: {"points": [], "tail": []},
        ack=calls.ack,
        audit=calls.audit,
        token=token,
        assets=assets,
    )
    app = web.Application()
    board.routes(app)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
async def calls() -> Calls:
    return Calls()


@pytest.fixture
async def open_board(tmp_path: Path, calls: Calls) -> AsyncIterator[TestServer]:
    server = await serve(None, tmp_path, calls)
    yield server
    await server.close()


@pytest.fixture
async def locked_board(tmp_path: Path, calls: Calls) -> AsyncIterator[TestServer]:
    server = await serve(TOKEN, tmp_path, calls)
    yield server
    await server.close()


def test_loopback_addresses() -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; every other address (and "" / 0.0.0.0) is not."""
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "10.0.0.5", "::", "monitor.lab"))


async def test_on_loopback_the_page_state_and_ack_are_open_but_the_ack_needs_its_header(
    open_board: TestServer, calls: Calls
) -> None:
    """No token on loopback, under a loopback host name only; an ack without X-Orchestra (what a
    cross-site form sends) is refused."""
    async with aiohttp.ClientSession(base_url=open_board.make_url("/")) as s:
        async with s.get("/dashboard") as r:
            assert r.status == 200 and "LLM Orchestra" in await r.text()
        async with s.get("/dashboard/state") as r:
            assert (await r.json())["headline"]["models_loaded"] == 1
        async with s.post("/dashboard/ack", json={"alert_id": "a1"}) as r:
            assert r.status == 403
        async with s.post("/dashboard/ack", json={"alert_id": "a1"}, headers={"X-Orchestra": "ack"}) as r:
            assert r.status == 200
        async with s.post("/dashboard/ack", json={"alert_id": "nope"}, headers={"X-Orchestra": "ack"}) as r:
            assert r.status == 404
        async with s.get("/dashboard/audit", params={"id": "r1"}) as r:
            page = await r.text()
        for host in ("evil.example:80", "10.0.0.5"):  # a DNS name rebound to 127.0.0.1 is another site
            async with s.get("/dashboard/state", headers={"Host": host}) as r:
                assert r.status == 401, host
        async with s.get("/dashboard/state", headers={"Host": "localhost:9464"}) as r:
            assert r.status == 200
    assert calls.acks == [("a1", "dashboard@127.0.0.1"), ("nope", "dashboard@127.0.0.1")]
    assert "<code>r1</code>" in page and "&lt;b&gt;hi&lt;/b&gt;" in page  # escaped


async def test_off_loopback_everything_needs_the_token_once_given_it_is_a_cookie(locked_board: TestServer) -> None:
    """401 without the token or with a wrong one; ?token= sets an HttpOnly cookie and leaves the address."""
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address, as browsers do
    async with aiohttp.ClientSession(base_url=locked_board.make_url("/"), cookie_jar=jar) as s:
        for path in ("/dashboard", "/dashboard/state", "/dashboard/events", "/dashboard/static/dashboard.js"):
            async with s.get(path) as r:
                assert r.status == 401, path
        async with s.get("/dashboard", params={"token": "wrong"}, allow_redirects=False) as r:
            assert r.status == 401
        async with s.get("/dashboard", params={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/dashboard"
            cookie = r.cookies[COOKIE]
            assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
        async with s.get("/dashboard/state") as r:  # the session holds the cookie now
            assert r.status == 200
    async with aiohttp.ClientSession(base_url=locked_board.make_url("/")) as s:
        async with s.get("/dashboard/state", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with s.post("/dashboard/ack", json={"alert_id": "a1"}, headers={"X-Orchestra": "ack"}) as r:
            assert r.status == 401


async def test_a_missing_charting_library_is_a_404_that_says_what_to_run(open_board: TestServer) -> None:
    """The page's own files are served; the vendored uPlot is not there, and the answer says so."""
    async with aiohttp.ClientSession(base_url=open_board.make_url("/")) as s:
        async with s.get("/dashboard/static/dashboard.js") as r:
            assert r.status == 200 and "EventSource" in await r.text()
        async with s.get("/dashboard/vendor/uPlot.iife.min.js") as r:
            assert r.status == 404 and "make vendor" in await r.text()
        async with s.get("/dashboard/static/..%2F..%2Factor.py") as r:
            assert r.status == 404


def test_the_token_file_is_created_private_and_the_token_never_logged(tmp_path: Path) -> None:
    """0600 on first start, the same token afterwards, and registered with the log redaction."""
    path = tmp_path / "data" / "dashboard-token"
    token = load_token(path)
    try:
        assert len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_token(path) == token
        assert redact(f"leaked {token}") == "leaked ***"
    finally:
        forget_secret(token)


def test_only_a_monitor_bound_off_loopback_asks_for_the_token(tmp_path: Path) -> None:
    """Bound to 0.0.0.0 the dashboard makes <data_dir>/dashboard-token; on 127.0.0.1 it needs none."""
    calls = Calls()
    io: dict[str, Any] = {"state": dict, "history": dict, "ack": calls.ack, "audit": calls.audit}
    open_cfg = test_config(tmp_path / "a", "nats://127.0.0.1:4222")
    assert Dashboard.of(open_cfg, **io).token is None
    lab = test_config(tmp_path / "b", "nats://127.0.0.1:4222", overrides={"monitor": {"metrics_host": "0.0.0.0"}})
    board = Dashboard.of(lab, **io)
    try:
        assert board.token_file == Path(lab.data_dir) / "dashboard-token"
        assert board.token == board.token_file.read_text().strip()
    finally:
        forget_secret(board.token)
