"""The monitor's HTTP surface (actors/diversity_monitor/web.py, metrics.py) against careless and hostile clients, on
real sockets: a live page that stops reading has its stream ended (and is not kept), live pages are capped, bytes
that are not UTF-8 in a token, a Host that is not a host, an out-of-range audit time and an absurd acknowledgement
are refusals rather than 500s, the page cannot be framed, and /metrics on loopback answers loopback names only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import actors.diversity_monitor.web as web_mod
from actors.diversity_monitor.metrics import Metrics, MetricsServer
from actors.diversity_monitor.web import SECURITY_HEADERS, Dashboard
from tests.support.wait import eventually

TOKEN = "operator-token-0123456789"


@dataclass
class Door:
    port: int
    dashboard: Dashboard
    server: MetricsServer

    async def raw(self, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """One request written as given; the status, headers (lower-case) and body of the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(head + b"\r\n\r\n" + body)
        try:
            raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            lines = raw_head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            length = int(headers.get("content-length", "0"))
            return int(lines[0].split(" ")[1]), headers, await asyncio.wait_for(reader.readexactly(length), 5.0)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _no_ack(alert_id: str, by: str) -> bool:
    return False


async def _no_audit(request_id: str, at: float | None) -> list[dict[str, Any]]:
    return []


@contextlib.asynccontextmanager
async def _door(tmp_path: Path, token: str | None) -> AsyncIterator[Door]:
    dashboard = Dashboard(
        state=lambda: {"now": 1.0}, history=dict, ack=_no_ack, audit=_no_audit, token=token, assets=tmp_path
    )
    server = MetricsServer(Metrics(lambda: None), "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
    server.extra = dashboard.routes
    port = await server.start()
    try:
        yield Door(port, dashboard, server)
    finally:
        dashboard.close()
        await server.stop()


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Door]:
    async with _door(tmp_path, None) as d:
        yield d


@pytest.fixture
async def token_door(tmp_path: Path) -> AsyncIterator[Door]:
    async with _door(tmp_path, TOKEN) as d:
        yield d


async def test_a_live_page_that_stops_reading_has_its_stream_ended_and_is_not_kept(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_mod, "SSE_WRITE_S", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await eventually(lambda: door.dashboard.clients, timeout=5.0)
    big = {"blob": "x" * 20_000}
    for _ in range(5000):  # until the socket's buffers are full and the page lags its queue behind (100 MB at most)
        door.dashboard.broadcast("point", big)
        await asyncio.sleep(0)
        if not door.dashboard.clients:
            break
    assert not door.dashboard.clients  # dropped from the fan-out
    data = b""
    with contextlib.suppress(ConnectionResetError):  # cut, or ended: its EventSource reconnects for a fresh state
        async with asyncio.timeout(10.0):
            while not data.endswith(b"\r\n0\r\n\r\n") and (chunk := await reader.read(1 << 20)):
                data += chunk  # until the stream's last chunk, or the connection's end
    assert not data or data.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()


async def test_live_pages_are_capped(door: Door, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_mod, "MAX_CLIENTS", 2)
    open_pages = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(b"GET /dashboard/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        open_pages.append(writer)
    await eventually(lambda: len(door.dashboard.clients) == 2, timeout=5.0)
    status, headers, _ = await door.raw(b"GET /dashboard/events HTTP/1.1\r\nHost: localhost")
    assert status == 503 and headers["retry-after"] == "10"
    for writer in open_pages:
        writer.close()


@pytest.mark.parametrize(
    "header",
    [b"Authorization: Bearer \xff\xfe", b"Cookie: orchestra_dashboard=\xff"],
    ids=["bearer", "cookie"],
)
async def test_a_token_that_is_not_utf8_is_a_401(token_door: Door, header: bytes) -> None:
    status, _, _ = await token_door.raw(b"GET /dashboard/state HTTP/1.1\r\nHost: lab.example\r\n" + header)
    assert status == 401


async def test_the_right_token_still_opens_it(token_door: Door) -> None:
    auth = b"Authorization: Bearer " + TOKEN.encode()
    status, _, _ = await token_door.raw(b"GET /dashboard/state HTTP/1.1\r\nHost: lab.example\r\n" + auth)
    assert status == 200


async def test_a_host_that_is_not_a_host_is_refused_not_a_500(door: Door) -> None:
    status, _, _ = await door.raw(b"GET /dashboard/state HTTP/1.1\r\nHost: [")
    assert status == 401


@pytest.mark.parametrize("at", ["inf", "nan", "1e20", "-1e20", "-5"])
async def test_an_audit_time_out_of_range_is_a_400(door: Door, at: str) -> None:
    head = b"GET /dashboard/audit?id=abc&at=%b HTTP/1.1\r\nHost: 127.0.0.1" % at.encode()
    status, _, _ = await door.raw(head)
    assert status == 400


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"[" * 3000, 400), (b'{"alert_id": ["a"]}', 400), (b'{"alert_id": "' + b"a" * 300 + b'"}', 400),
     (b" " * 5000, 413), (b'{"alert_id": "x"}', 404)],
    ids=["nested", "not a string", "too long", "too big", "no such alert"],
)  # fmt: skip
async def test_an_acknowledgement_is_checked_before_it_is_read_far(door: Door, body: bytes, status: int) -> None:
    head = b"POST /dashboard/ack HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Orchestra: ack\r\nContent-Length: %d" % len(body)
    got, _, _ = await door.raw(head, body)
    assert got == status


async def test_the_operator_page_cannot_be_framed_or_sniffed(door: Door) -> None:
    status, headers, _ = await door.raw(b"GET /dashboard/audit?id=abc HTTP/1.1\r\nHost: 127.0.0.1")
    assert status == 200
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


async def test_metrics_on_loopback_answer_loopback_names_only(door: Door) -> None:
    status, _, _ = await door.raw(b"GET /metrics HTTP/1.1\r\nHost: rebound.example:9464")
    assert status == 403  # a page of another site, rebound to 127.0.0.1, cannot read the lab's figures
