"""The gateway's fast lane (actors/gateway/fastlane.py) on real sockets: which requests it answers itself, which it
hands to aiohttp (with the rest of their connection), pipelining, streams, closing, errors and the gateway's stop.
The lane's handler here echoes what it read; aiohttp's answers say "aiohttp", so each test sees who answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import uvloop
from aiohttp import web

from actors.gateway.fastlane import Lane, LaneRequest, LaneStream, close_lanes
from actors.gateway.http import json_response
from tests.support.wait import eventually

HEAVY = 1024  # bodies of this many bytes or more are aiohttp's


@dataclass
class Door:
    host: str
    port: int
    lanes: set[Lane]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def _lane_handler(request: LaneRequest) -> web.StreamResponse | LaneStream:
    body = await request.read()
    if body == b"boom":
        raise RuntimeError("a bug in a handler")
    if body == b"stream":
        stream = await request.open_stream({"Content-Type": "text/event-stream"})
        await stream.write(b"data: 1\n\n")
        await stream.write(b"data: 2\n\n")
        await stream.write_eof()
        return stream
    if body == b"slow":
        await asyncio.sleep(0.3)
    if body == b"bad-header":
        return web.Response(body=b"x", headers={"X-Id": "a\r\nInjected: 1"})
    return json_response(
        {"by": "lane", "path": request.path, "body": body.decode(), "key": request.headers.get("auth")}
    )


async def _aiohttp_handler(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response({"by": "aiohttp", "path": request.path, "body": body.decode()})


@contextlib.asynccontextmanager
async def _door() -> AsyncIterator[Door]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _aiohttp_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    fallback = runner.server
    assert fallback is not None
    lanes: set[Lane] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Lane(_lane_handler, fallback, HEAVY, lanes), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Door("127.0.0.1", port, lanes)
    finally:
        server.close()
        await close_lanes(lanes, 1.0)
        await runner.cleanup()


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with _door() as d:
        yield d


def _post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = [b"POST %b HTTP/1.1" % path.encode(), b"Host: x", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-case names), body (Content-Length or chunked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            piece = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += piece[:-2]
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def _send(door: Door, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A fresh connection to the door, ``data`` written on it."""
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(data)
    return reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _by(reader: asyncio.StreamReader) -> tuple[str, str]:
    status, _, body = await _response(reader)
    assert status == 200, body
    answer = json.loads(body)
    return answer["by"], answer["body"]


async def test_light_requests_are_answered_by_the_lane_on_one_kept_alive_connection(door: Door) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        for n in range(3):
            async with http.post(f"{door.url}/v1/chat/completions", data=f"hi {n}", headers={"Auth": "k"}) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/json"
                assert await r.json() == {"by": "lane", "path": "/v1/chat/completions", "body": f"hi {n}", "key": "k"}
        async with http.post(f"{door.url}/v1/completions", data="x") as r:
            assert (await r.json())["by"] == "lane"
    assert len(door.lanes) <= 1  # one connection served all four


async def test_a_request_the_lane_does_not_take_hands_aiohttp_the_rest_of_the_connection(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(_post("/v1/chat/completions", b"first"))
    assert await _by(reader) == ("lane", "first")
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _by(reader))[0] == "aiohttp"
    writer.write(_post("/v1/chat/completions", b"after"))  # the connection is aiohttp's now
    assert await _by(reader) == ("aiohttp", "after")
    await _close(writer)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        _post("/v1/chat/completions", b"a" * HEAVY),
        _post("/v1/chat/completions?x=1", b"abc"),
        _post("/v1/embeddings", b"abc"),
        _post("/v1/chat/completions", b"abc", b"Connection: upgrade", b"Upgrade: h2c"),
    ],
    ids=["chunked", "http/1.0", "heavy", "query", "other path", "upgrade"],
)
async def test_what_the_lane_does_not_read_is_answered_by_aiohttp(door: Door, request_bytes: bytes) -> None:
    reader, writer = await _send(door, request_bytes)
    assert (await _by(reader))[0] == "aiohttp"
    await _close(writer)


async def test_expect_100_continue_is_aiohttps(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"HTTP/1.1 100")
    writer.write(b"abc")
    assert await _by(reader) == ("aiohttp", "abc")
    await _close(writer)


@pytest.mark.parametrize(
    "extra",
    [(b"Content-Length: 3",), (b"X-Folded: a", b" b"), (b"X-Long: " + b"a" * 9000,)],
    ids=["two lengths", "folded header", "a header line over aiohttp's limit"],
)
async def test_a_head_it_does_not_take_is_refused_by_aiohttp_not_by_the_lane(door: Door, extra: tuple[bytes]) -> None:
    reader, writer = await _send(door, _post("/v1/chat/completions", b"abc", *extra))
    status, _, body = await _response(reader)
    assert status == 400, body  # aiohttp's parser refused it
    await _close(writer)


async def test_pipelined_requests_are_answered_in_order(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(
        _post("/v1/chat/completions", b"slow")
        + _post("/v1/completions", b"two")
        + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert await _by(reader) == ("lane", "slow")
    assert await _by(reader) == ("lane", "two")
    assert (await _by(reader))[0] == "aiohttp"
    await _close(writer)


async def test_a_stream_is_chunked_and_the_connection_goes_on(door: Door) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(f"{door.url}/v1/chat/completions", data="stream") as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            assert r.headers["Transfer-Encoding"] == "chunked"
            assert await r.text() == "data: 1\n\ndata: 2\n\n"
        async with http.post(f"{door.url}/v1/chat/completions", data="next") as r:
            assert (await r.json())["body"] == "next"


async def test_connection_close_is_honoured(door: Door) -> None:
    reader, writer = await _send(door, _post("/v1/chat/completions", b"bye", b"Connection: close"))
    status, headers, _ = await _response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the lane
    await _close(writer)


async def test_a_bug_is_an_openai_shaped_500_and_the_connection_lives(door: Door) -> None:
    reader, writer = await _send(door, _post("/v1/chat/completions", b"boom"))
    status, _, body = await _response(reader)
    assert status == 500
    assert json.loads(body)["error"] == {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    writer.write(_post("/v1/chat/completions", b"again"))
    assert await _by(reader) == ("lane", "again")
    await _close(writer)


async def test_a_header_with_a_line_break_never_reaches_the_client(door: Door) -> None:
    reader, writer = await _send(door, _post("/v1/chat/completions", b"bad-header"))
    status, headers, _ = await _response(reader)
    assert status == 500
    assert "injected" not in headers
    await _close(writer)


async def test_stop_lets_the_request_being_answered_finish_then_closes(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(_post("/v1/chat/completions", b"slow"))
    await eventually(lambda: any(lane.busy for lane in door.lanes), timeout=5.0)
    idle_reader, idle_writer = await asyncio.open_connection(door.host, door.port)
    await eventually(lambda: len(door.lanes) == 2, timeout=5.0)
    await close_lanes(door.lanes, 5.0)
    assert await _by(reader) == ("lane", "slow")  # answered in full
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # then closed
    assert await asyncio.wait_for(idle_reader.read(), 5.0) == b""  # the idle one at once
    await _close(writer)
    await _close(idle_writer)


async def test_a_client_that_leaves_mid_request_leaves_nothing_behind(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(_post("/v1/chat/completions", b"slow"))
    await eventually(lambda: any(lane.busy for lane in door.lanes), timeout=5.0)
    await _close(writer)
    await eventually(lambda: not door.lanes, timeout=5.0)
    reader2, writer2 = await asyncio.open_connection(door.host, door.port)  # the door still answers
    writer2.write(_post("/v1/chat/completions", b"ok"))
    assert await _by(reader2) == ("lane", "ok")
    await _close(writer2)


def test_on_uvloop_the_lane_answers_streams_and_hands_over() -> None:
    """The gateway runs on uvloop: its transports hand a connection to aiohttp as asyncio's do."""

    async def scenario() -> None:
        async with _door() as door:
            reader, writer = await asyncio.open_connection(door.host, door.port)
            writer.write(_post("/v1/chat/completions", b"slow") + _post("/v1/completions", b"stream"))
            assert await _by(reader) == ("lane", "slow")
            status, headers, body = await _response(reader)
            assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"data: 1\n\ndata: 2\n\n")
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" + _post("/v1/completions", b"x"))
            assert (await _by(reader))[0] == "aiohttp"
            assert await _by(reader) == ("aiohttp", "x")
            await _close(writer)

    uvloop.run(scenario())
