"""The gateway's fast lane (actors/gateway/fastlane.py) on real sockets: which requests it answers itself, which it
hands to aiohttp (with the rest of their connection), pipelining, streams, closing, errors and the gateway's stop.
The lane's handler here echoes what it read; aiohttp's answers say "aiohttp", so each test sees who answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import uvloop

from actors.gateway.fastlane import close_lanes
from tests.support.lane import HEAVY, Door, by, close, door_of, post, response, send
from tests.support.wait import eventually


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with door_of() as d:
        yield d


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
    writer.write(post("/v1/chat/completions", b"first"))
    assert await by(reader) == ("lane", "first")
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await by(reader))[0] == "aiohttp"
    writer.write(post("/v1/chat/completions", b"after"))  # the connection is aiohttp's now
    assert await by(reader) == ("aiohttp", "after")
    await close(writer)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        post("/v1/chat/completions", b"a" * HEAVY),
        post("/v1/chat/completions?x=1", b"abc"),
        post("/v1/embeddings", b"abc"),
        post("/v1/chat/completions", b"abc", b"Connection: upgrade", b"Upgrade: h2c"),
    ],
    ids=["chunked", "http/1.0", "heavy", "query", "other path", "upgrade"],
)
async def test_what_the_lane_does_not_read_is_answered_by_aiohttp(door: Door, request_bytes: bytes) -> None:
    reader, writer = await send(door, request_bytes)
    assert (await by(reader))[0] == "aiohttp"
    await close(writer)


async def test_expect_100_continue_is_aiohttps(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"HTTP/1.1 100")
    writer.write(b"abc")
    assert await by(reader) == ("aiohttp", "abc")
    await close(writer)


@pytest.mark.parametrize(
    "extra",
    [(b"Content-Length: 3",), (b"X-Folded: a", b" b"), (b"X-Long: " + b"a" * 9000,)],
    ids=["two lengths", "folded header", "a header line over aiohttp's limit"],
)
async def test_a_head_it_does_not_take_is_refused_by_aiohttp_not_by_the_lane(door: Door, extra: tuple[bytes]) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"abc", *extra))
    status, _, body = await response(reader)
    assert status == 400, body  # aiohttp's parser refused it
    await close(writer)


async def test_pipelined_requests_are_answered_in_order(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(
        post("/v1/chat/completions", b"slow") + post("/v1/completions", b"two") + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert await by(reader) == ("lane", "slow")
    assert await by(reader) == ("lane", "two")
    assert (await by(reader))[0] == "aiohttp"
    await close(writer)


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
    reader, writer = await send(door, post("/v1/chat/completions", b"bye", b"Connection: close"))
    status, headers, _ = await response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the lane
    await close(writer)


async def test_a_bug_is_an_openai_shaped_500_and_the_connection_lives(door: Door) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"boom"))
    status, _, body = await response(reader)
    assert status == 500
    assert json.loads(body)["error"] == {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    writer.write(post("/v1/chat/completions", b"again"))
    assert await by(reader) == ("lane", "again")
    await close(writer)


async def test_a_header_with_a_line_break_never_reaches_the_client(door: Door) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"bad-header"))
    status, headers, _ = await response(reader)
    assert status == 500
    assert "injected" not in headers
    await close(writer)


async def test_stop_lets_the_request_being_answered_finish_then_closes(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(post("/v1/chat/completions", b"slow"))
    await eventually(lambda: any(lane.busy for lane in door.lanes), timeout=5.0)
    idle_reader, idle_writer = await asyncio.open_connection(door.host, door.port)
    await eventually(lambda: len(door.lanes) == 2, timeout=5.0)
    await close_lanes(door.lanes, 5.0)
    assert await by(reader) == ("lane", "slow")  # answered in full
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # then closed
    assert await asyncio.wait_for(idle_reader.read(), 5.0) == b""  # the idle one at once
    await close(writer)
    await close(idle_writer)


async def test_a_client_that_leaves_mid_request_leaves_nothing_behind(door: Door) -> None:
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(post("/v1/chat/completions", b"slow"))
    await eventually(lambda: any(lane.busy for lane in door.lanes), timeout=5.0)
    await close(writer)
    await eventually(lambda: not door.lanes, timeout=5.0)
    reader2, writer2 = await asyncio.open_connection(door.host, door.port)  # the door still answers
    writer2.write(post("/v1/chat/completions", b"ok"))
    assert await by(reader2) == ("lane", "ok")
    await close(writer2)


def test_on_uvloop_the_lane_answers_streams_and_hands_over() -> None:
    """The gateway runs on uvloop: its transports hand a connection to aiohttp as asyncio's do."""

    async def scenario() -> None:
        async with door_of() as door:
            reader, writer = await asyncio.open_connection(door.host, door.port)
            writer.write(post("/v1/chat/completions", b"slow") + post("/v1/completions", b"stream"))
            assert await by(reader) == ("lane", "slow")
            status, headers, body = await response(reader)
            assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"data: 1\n\ndata: 2\n\n")
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" + post("/v1/completions", b"x"))
            assert (await by(reader))[0] == "aiohttp"
            assert await by(reader) == ("aiohttp", "x")
            await close(writer)

    uvloop.run(scenario())
