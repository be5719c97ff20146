"""The fast lane (actors/gateway/fastlane.py, wire.py) against hostile or broken clients, on real sockets: a head the
lane would read differently from aiohttp is never the lane's (smuggling through a bare LF, control bytes, missing or
repeated singleton headers, too many headers), an answer that has begun is never followed by another, a client that
does not read holds up its own connection only, a request still arriving is not cut by the idle timer, and a head
is read once however its body is split."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest
import uvloop

import actors.gateway.fastlane as fastlane
from actors.gateway.fastlane import Lane
from tests.support.lane import BIG, Door, by, close, door_of, post, response, send
from tests.support.wait import eventually


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with door_of() as d:
        yield d


async def _refused(door: Door, data: bytes) -> None:
    """aiohttp answers ``data`` with a 400 at once (not the lane, not at a timeout), and the lane ran nothing."""
    reader, writer = await send(door, data)
    status, _, body = await response(reader)  # within 5 s: the keep-alive timer is 75 s
    assert status == 400, body
    assert door.calls == []
    await close(writer)


async def test_a_bare_lf_inside_a_head_cannot_smuggle_a_second_request(door: Door) -> None:
    # a proxy reading a bare LF as a line end sees one chunked request; the lane must not see two
    smuggled = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nSMUG"
    data = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nX-A: a\nTransfer-Encoding: chunked\r\n"
        b"\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    )
    await _refused(door, data)


@pytest.mark.parametrize("byte", [b"\x00", b"\r", b"\x01", b"\x7f"], ids=["nul", "cr", "soh", "del"])
async def test_a_control_byte_in_a_value_is_refused(door: Door, byte: bytes) -> None:
    await _refused(door, post("/v1/chat/completions", b"abc", b"X-A: a" + byte + b"b"))


async def test_a_tab_in_a_value_is_read(door: Door) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"abc", b"X-A: a\tb"))
    assert await by(reader) == ("lane", "abc")
    await close(writer)


@pytest.mark.parametrize(
    "data",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        post("/v1/chat/completions", b"abc", b"Host: y"),
        post("/v1/chat/completions", b"abc", b"Content-Type: a", b"Content-Type: b"),
        post("/v1/chat/completions", b"abc", *(b"X-%d: v" % i for i in range(127))),  # 129 with Host and length
        post("/v1/chat/completions", b"abc", b"Sec-WebSocket-Key1: a"),  # llhttp refuses it by its name
    ],
    ids=["no host", "two hosts", "two content types", "129 headers", "websocket key1"],
)
async def test_heads_aiohttp_refuses_are_refused(door: Door, data: bytes) -> None:
    await _refused(door, data)


async def test_128_headers_are_read(door: Door) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"abc", *(b"X-%d: v" % i for i in range(126))))
    assert await by(reader) == ("lane", "abc")
    await close(writer)


@pytest.mark.parametrize(
    "data",
    [
        b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\nContent-Length: 3\r\n",  # incomplete, a bare LF in it
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello's first bytes: never a head
    ],
    ids=["bare LF heads", "a bare LF in an unfinished head", "not HTTP"],
)
async def test_what_can_never_be_a_lane_head_is_answered_at_once(door: Door, data: bytes) -> None:
    await _refused(door, data)


@pytest.mark.parametrize("body", [b"stream-then-bug", b"stream-bug"], ids=["after the end", "mid-stream"])
async def test_a_bug_after_the_answer_began_closes_the_connection_instead_of_a_second_answer(
    door: Door, body: bytes
) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", body) + post("/v1/chat/completions", b"next"))
    data = await asyncio.wait_for(reader.read(), 5.0)  # everything until the lane closes the connection
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.count(b"HTTP/1.1") == 1  # no 500 after it, and the pipelined request is not answered
    assert b"data: 1\n\n" in data
    assert (b"0\r\n\r\n" in data) is (body == b"stream-then-bug")  # mid-stream: the body is cut, not ended
    assert door.calls == [body]
    await close(writer)


async def test_a_client_that_does_not_read_holds_up_its_own_requests(door: Door) -> None:
    pipelined = 40
    reader, writer = await send(door, post("/v1/chat/completions", b"big") * pipelined)
    await eventually(lambda: any(lane.waiting_for_client for lane in door.lanes), timeout=5.0)
    for _ in range(20):
        await asyncio.sleep(0)  # let the loop run: nothing more may be taken while the client reads nothing
    taken = len(door.calls)
    assert taken < 10  # a few answers fit the socket buffers; 40 MB would have been queued in the gateway before
    for _ in range(pipelined):
        status, _, answer = await response(reader)
        assert status == 200 and len(answer) == BIG
    assert len(door.calls) == pipelined
    await close(writer)


async def test_a_request_still_arriving_is_not_cut_by_the_idle_timer(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastlane, "KEEPALIVE_S", 0.3)
    reader, writer = await asyncio.open_connection(door.host, door.port)
    data = post("/v1/chat/completions", b"slowly")
    for i in range(0, len(data), 8):  # the whole request takes longer than the idle timer, sent in pieces
        writer.write(data[i : i + 8])
        await asyncio.sleep(0.05)  # the client's pace: the scenario itself, not a wait for an event
    assert await by(reader) == ("lane", "slowly")
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # then silent: closed by the idle timer
    await close(writer)


async def test_a_head_is_read_once_however_its_body_is_split(door: Door, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[bytes] = []
    read_head = fastlane.read_head

    def counted(head: bytes, heavy: int) -> object:
        reads.append(head)
        return read_head(head, heavy)

    monkeypatch.setattr(fastlane, "read_head", counted)
    body = b"x" * 600
    data = post("/v1/chat/completions", body)
    head_end = data.index(b"\r\n\r\n") + 4
    reader, writer = await send(door, data[:head_end])
    lane: Lane = await eventually(lambda: next(iter(door.lanes), None), timeout=5.0)
    for i in range(0, len(body), 50):
        writer.write(body[i : i + 50])
        sent = head_end + i + 50
        await eventually(lambda n=sent: lane.buffered >= n or door.calls, timeout=5.0)  # this piece arrived alone
    assert await by(reader) == ("lane", body.decode())
    assert len(reads) == 1
    await close(writer)


def test_on_uvloop_a_client_that_does_not_read_is_held_up_and_a_late_bug_closes_the_connection() -> None:
    """The gateway runs on uvloop: its transports pause and resume the lane's writes as asyncio's do."""

    async def scenario() -> None:
        async with door_of() as door:
            await test_a_client_that_does_not_read_holds_up_its_own_requests(door)
            door.calls.clear()
            late_bug = test_a_bug_after_the_answer_began_closes_the_connection_instead_of_a_second_answer
            await late_bug(door, b"stream-bug")

    uvloop.run(scenario())


@pytest.mark.parametrize(
    "extra",
    [
        (b"Connection: close", b"Connection: keep-alive"),
        (b"Proxy-Connection: close",),
        (b"Authorization: Bearer A", b"Authorization: Bearer B"),
        (b"X-" + b"n" * 300 + b": v",),
        (b"Content-Encoding: identity",),
    ],
    ids=["two connection headers", "proxy-connection", "a repeated header", "a long name", "an encoded body"],
)
async def test_heads_aiohttp_reads_its_own_way_are_aiohttps(door: Door, extra: tuple[bytes, ...]) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"abc", *extra))
    assert await by(reader) == ("aiohttp", "abc")
    assert door.calls == []
    await close(writer)


async def test_a_gzip_body_is_aiohttps_to_decode(door: Door) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", gzip.compress(b"packed"), b"Content-Encoding: gzip"))
    assert await by(reader) == ("aiohttp", "packed")
    assert door.calls == []
    await close(writer)


@pytest.mark.parametrize(
    "tail",
    [b"Host: a\x01b\r\n", b"Host: x\rY: z", b"Ho(st: x\r\n", b"Host: x\r\n folded\r\n"],
    ids=["control byte", "lone CR", "bad name", "folded"],
)
async def test_an_unfinished_head_that_cannot_be_the_lanes_is_refused_at_once(door: Door, tail: bytes) -> None:
    await _refused(door, b"POST /v1/completions HTTP/1.1\r\n" + tail)


async def test_a_repeated_response_header_is_sent_twice_and_one_length_only(door: Door) -> None:
    reader, writer = await send(door, post("/v1/chat/completions", b"two-tags"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    assert head.count(b"X-Tag: ") == 2
    assert head.lower().count(b"content-length: ") == 1
    await close(writer)
