"""A fast-lane door for the lane's tests (tests/integration/test_gateway_fastlane*.py): the lane in front of an
aiohttp app on an ephemeral loopback port, and raw-socket helpers. The lane's handler echoes what it read (or acts
out a body's instruction: ``boom``, ``stream``, ``slow``, ...); aiohttp's answers say "aiohttp", so each test sees
who answered. ``Door.calls`` lists the bodies the lane's handler was given, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from actors.gateway.fastlane import Lane, close_lanes
from actors.gateway.http import json_response
from actors.gateway.lanerequest import LaneRequest, LaneStream

HEAVY = 1024  # bodies of this many bytes or more are aiohttp's


@dataclass
class Door:
    host: str
    port: int
    lanes: set[Lane]
    calls: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


BIG = 1024 * 1024  # the answer to a body of b"big"


async def _lane_handler(request: LaneRequest) -> web.StreamResponse | LaneStream:
    body = await request.read()
    if body == b"boom":
        raise RuntimeError("a bug in a handler")
    if body.startswith(b"stream"):
        stream = await request.open_stream({"Content-Type": "text/event-stream"})
        await stream.write(b"data: 1\n\n")
        if body == b"stream-bug":
            raise RuntimeError("a bug after the answer began")
        await stream.write(b"data: 2\n\n")
        await stream.write_eof()
        if body == b"stream-then-bug":
            raise RuntimeError("a bug after the answer ended")
        return stream
    if body == b"big":
        return web.Response(body=b"b" * BIG)
    if body == b"two-tags":  # a repeated header, and a length the handler set itself (the lane sets its own)
        return web.Response(body=b"x", headers=CIMultiDict([("X-Tag", "a"), ("X-Tag", "b"), ("content-length", "9")]))
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
async def door_of() -> AsyncIterator[Door]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _aiohttp_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    fallback = runner.server
    assert fallback is not None
    lanes: set[Lane] = set()
    calls: list[bytes] = []

    async def handler(request: LaneRequest) -> web.StreamResponse | LaneStream:
        calls.append(await request.read())
        return await _lane_handler(request)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Lane(handler, fallback, HEAVY, lanes), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Door("127.0.0.1", port, lanes, calls)
    finally:
        server.close()
        await close_lanes(lanes, 1.0)
        await runner.cleanup()


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = [b"POST %b HTTP/1.1" % path.encode(), b"Host: x", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
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


async def send(door: Door, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A fresh connection to the door, ``data`` written on it."""
    reader, writer = await asyncio.open_connection(door.host, door.port)
    writer.write(data)
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def by(reader: asyncio.StreamReader) -> tuple[str, str]:
    status, _, body = await response(reader)
    assert status == 200, body
    answer = json.loads(body)
    return answer["by"], answer["body"]
