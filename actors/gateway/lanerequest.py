"""What a handler sees of a request the gateway's fast lane took (fastlane.py), and the stream it may open: the
same reads and writes a handler makes on aiohttp's request and StreamResponse, so one handler serves both paths.

    body = await request.read()                    # the whole body (the lane read it before calling)
    stream = await request.open_stream(headers)    # a chunked 200 (server-sent events): the head now
    await stream.write(b"data: ...\n\n"); await stream.write_eof()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from actors.gateway.wire import Headers


class LaneWriter(Protocol):
    """The connection a lane request came on (fastlane.Lane): its answer's head and body go out through it."""

    def write_head(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], *, chunked: bool, keep_alive: bool
    ) -> None: ...

    async def write_body(self, data: bytes) -> None: ...


class LaneRequest:
    """What a handler reads of a request the lane took: its method, path, headers and body."""

    __slots__ = ("method", "path", "headers", "body", "keep_alive", "_lane")

    def __init__(self, path: str, headers: Headers, body: bytes, keep_alive: bool, lane: LaneWriter) -> None:
        self.method = "POST"
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self._lane = lane

    async def read(self) -> bytes:
        return self.body

    async def open_stream(self, headers: dict[str, str]) -> LaneStream:
        """Start a chunked answer (server-sent events): the head now, then each ``write``."""
        stream = LaneStream(self._lane)
        self._lane.write_head(200, "OK", headers.items(), chunked=True, keep_alive=self.keep_alive)
        return stream


class LaneStream:
    """A chunked answer being written; a client that has gone is a ConnectionResetError, as with aiohttp."""

    __slots__ = ("_lane", "done")

    def __init__(self, lane: LaneWriter) -> None:
        self._lane = lane
        self.done = False

    async def write(self, data: bytes) -> None:
        if self.done:
            raise RuntimeError("write() after write_eof()")  # as aiohttp's
        if data:
            await self._lane.write_body(b"%x\r\n%b\r\n" % (len(data), data))

    async def write_eof(self) -> None:
        if not self.done:
            self.done = True
            await self._lane.write_body(b"0\r\n\r\n")
