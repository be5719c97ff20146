"""One HTTP/1.1 connection of the lean client (``clients/http1.py``) and the answer read on it.

Connection      an asyncio Protocol: llhttp (httptools) parses what arrives; one answer at a time
Response        an answer's status and headers; its body read whole or piece by piece
HttpError ...   the transport's failures (ConnectFailed, Disconnected, ProtocolError, BadHeader)
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType

import httptools

HIGH_WATER = 1 << 20  # bytes of answer buffered before the socket is paused
MAX_ANSWER = 256 << 20  # bytes of one answer (head and body) before it is refused: a runaway peer is bounded


class HttpError(Exception):
    """A transport failure of the lean client."""


class ConnectFailed(HttpError):
    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {error.strerror or error}")
        self.error = error


class Disconnected(HttpError):
    pass


class ProtocolError(HttpError):
    pass


class BadHeader(HttpError):
    """A header that would break the request apart (CR, LF); only its name is told."""


class Connection(asyncio.Protocol):
    """One connection and the answer being read on it (one at a time: no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.in_use = True  # False while idle in the pool
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.informational = False  # a 1xx answer is being read: the real one follows
        self.complete = False
        self.keep_alive = False
        self.received = 0  # bytes of this answer
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_use:  # bytes nobody asked for, on an idle connection: it cannot be trusted again
            self.close()
            return
        self.received += len(data)
        if self.received > MAX_ANSWER:
            self._fail(ProtocolError(f"the provider's answer is larger than {MAX_ANSWER} bytes"))
            self._wake()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the provider switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"the provider's answer is not valid HTTP/1.1: {exc}"))
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.head_done and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
                self.complete = True  # a close-delimited body ends here
            else:
                what = "answer" if self.received else "request"
                cause = f": {exc}" if exc else ""
                self.error = Disconnected(f"the provider closed the connection before the {what} was complete{cause}")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:  # 100 Continue, 103 Early Hints: not the answer
            self.informational = True
            return
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            self.headers.clear()
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # asked now: llhttp forgets it once the message ends

    # the reading side
    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, idle: float) -> None:
        """Until something arrives (or the connection ends); TimeoutError after ``idle`` seconds of silence."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(idle, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no bytes from the provider within the idle timeout"))


class Response:
    """An answer's status and headers; its body read once with ``read`` or ``chunks``. Used as an async
    context manager: leaving it gives the connection back to the pool (or closes it, mid-answer)."""

    def __init__(self, conn: Connection, idle: float, release: Callable[[Connection], None]) -> None:
        self._conn, self._idle, self._release = conn, idle, release
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        encoding = conn.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate: zlib._Decompress | None = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib
        elif encoding in ("identity", ""):
            self._inflate = None
        else:
            raise ProtocolError(f"the provider sent a body encoded as {encoding!r}, which was not asked for")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        conn = self._conn
        while True:
            if conn.body:
                data = self._decoded(conn.take())
                if data:
                    yield data
                continue
            if conn.complete:
                break
            await conn.wait(self._idle)
        if self._inflate is not None and (tail := self._decoded(b"", final=True)):
            yield tail

    async def read(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            await conn.wait(self._idle)
        data = conn.take()
        return data if self._inflate is None else self._decoded(data, final=True)

    def _decoded(self, data: bytes, final: bool = False) -> bytes:
        if self._inflate is None:
            return data
        try:
            return self._inflate.decompress(data) + (self._inflate.flush() if final else b"")
        except zlib.error as exc:
            raise ProtocolError(f"the provider's compressed body is corrupt: {exc}") from exc

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release(self._conn)
