"""The gateway's aiohttp middleware (actors/gateway/http.py) on a real socket: a bug after an answer has begun is
never followed by a second answer inside or after it (the connection is closed, as the fast lane does), and every
answer names the server without aiohttp's version."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from actors.gateway.http import MAX_BODY, openai_errors, server_header
from actors.gateway.wire import SERVER


async def _late_bug(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await stream.prepare(request)
    await stream.write(b"data: 1\n\n")
    raise RuntimeError("a bug after the answer began")


async def _early_bug(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug before any answer")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application(middlewares=[openai_errors])
    app[MAX_BODY] = 1024
    app.on_response_prepare.append(server_header)
    app.router.add_post("/late", _late_bug)
    app.router.add_post("/early", _early_bug)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def _exchange(port: int, path: str) -> bytes:
    """What the server sends for two pipelined requests until it closes the connection (or 5 s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    one = b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % path.encode()
    writer.write(one + one)
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            while chunk := await reader.read(65536):
                data += chunk
                if path == "/early" and data.count(b"HTTP/1.1 500") == 2:
                    break
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return data


async def test_a_bug_after_the_answer_began_closes_the_connection(port: int) -> None:
    data = await _exchange(port, "/late")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.count(b"HTTP/1.1 ") == 1  # no 500 inside the stream, and the pipelined request is not answered
    assert b"data: 1\n\n" in data
    assert f"Server: {SERVER}\r\n".encode() in data


async def test_a_bug_before_any_answer_is_an_openai_shaped_500_and_the_connection_lives(port: int) -> None:
    data = await _exchange(port, "/early")
    assert data.count(b"HTTP/1.1 500") == 2  # both pipelined requests answered
    assert b'"type":"server_error"' in data
    assert f"Server: {SERVER}\r\n".encode() in data and b"aiohttp/" not in data
