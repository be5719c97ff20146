"""A lean HTTP/1.1 client for the provider calls: one keep-alive pool per provider, llhttp (httptools) parsing.

    pool = Pool("https://api.openai.com", connect_timeout=5.0, keepalive=60.0)
    async with asyncio.timeout(total):
        async with await pool.request("POST", url, headers, body, idle=30.0) as resp:
            resp.status, resp.headers            # headers: lower-cased names
            data = await resp.read()             # or: async for chunk in resp.chunks(): ...
    await pool.close()

Why not aiohttp's ClientSession: a provider call is one POST with a JSON body to one host, and the
session's generality (cookies, redirects, proxies, traces, multidicts, per-request timers) costs ~120-200
µs of CPU per call against ~30-60 µs here (``bench/http_client.py``), on every request of the hot path.

What it does: HTTP and HTTPS (the system's CA store, or the ``ssl`` context given), Content-Length,
chunked and close-delimited bodies, gzip/deflate bodies (none is asked for: no Accept-Encoding is sent),
keep-alive reuse (LIFO; idle connections closed after ``keepalive`` seconds), ``idle``: the longest
silence accepted while waiting for the answer's bytes. A reused connection that the server had closed
before a single byte of answer came back is retried once on a new one (the request never reached a
handler). Header names and values with CR or LF are refused (no header injection).

Errors: ``ConnectFailed`` (OSError while connecting), ``TimeoutError`` (connect or idle), ``Disconnected``
(the server closed or broke the connection mid-answer), ``ProtocolError`` (an answer that is not HTTP/1.1),
``BadHeader`` (a header with CR or LF: only its name is told); all ``HttpError`` except the timeout. The
caller maps them (``clients.base.transport_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_lib
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from urllib.parse import urlsplit

import httptools

USER_AGENT = "User-Agent: llm-orchestra"
HIGH_WATER = 1 << 20  # bytes of answer buffered before the socket is paused


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


class _Conn(asyncio.Protocol):
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

    def __init__(self, pool: Pool, conn: _Conn, idle: float) -> None:
        self._pool, self._conn, self._idle = pool, conn, idle
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
        self._pool.release(self._conn)


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        keepalive: float = 60.0,
        max_idle: int = 64,
        ssl: ssl_lib.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        if "@" in parts.netloc:
            raise ValueError("credentials in a provider URL are not supported: the API key goes in api_key")
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc  # the Host header: as written (brackets of an IPv6 address kept)
        self.connect_timeout, self.keepalive, self.max_idle = connect_timeout, keepalive, max_idle
        self._ssl: ssl_lib.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl or ssl_lib.create_default_context()
        self._idle: list[_Conn] = []
        self._closed = False
        self._paths: dict[str, str] = {}

    def path_of(self, url: str) -> str:
        """The request target of ``url`` (a full URL on this origin, or a path)."""
        if url.startswith("/"):
            return url
        if (path := self._paths.get(url)) is not None:
            return path
        parts = urlsplit(url)
        if (parts.hostname, parts.port or self.port) != (self.host, self.port) or parts.scheme != self.scheme:
            raise ValueError(f"{url!r} is not on this pool's origin {self.scheme}://{self.authority}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if len(self._paths) < 1024:  # a provider has a handful of endpoints (one per model at most)
            self._paths[url] = path
        return path

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, idle: float) -> Response:
        """Send one request and wait for the answer's head. Leave the answer (``async with``) to give its
        connection back. The caller bounds the whole call (``asyncio.timeout``)."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        head = self._head(method, self.path_of(url), headers, len(body))
        while True:
            conn, reused = await self._checkout()
            conn.transport.write(head + body if len(body) < 16384 else head)  # type: ignore[union-attr]
            if len(body) >= 16384:
                conn.transport.write(body)  # type: ignore[union-attr]
            try:
                while not conn.head_done:
                    await conn.wait(idle)
                return Response(self, conn, idle)
            except Disconnected:
                if reused and conn.received == 0:
                    continue  # the server had closed it while idle: the request never arrived
                raise
            except BaseException:
                conn.close()
                raise

    def _head(self, method: str, path: str, headers: Mapping[str, str], length: int) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {self.authority}\r\nContent-Length: {length}"]
        agent = True
        for name, value in headers.items():
            if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
                raise BadHeader(f"refused header {name.strip()[:64]!r}: CR, LF or ':' in it")
            low = name.lower()
            if low != "host" and low != "content-length":
                lines.append(f"{name}: {value}")
            agent = agent and low != "user-agent"
        if agent:
            lines.append(USER_AGENT)
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    async def _checkout(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.keepalive:
                conn.close()
                continue
            conn._reset()
            conn.in_use = True
            return conn, True
        return await self._connect(), False

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Conn, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
                )
        except OSError as exc:
            raise ConnectFailed(self.host, self.port, exc) from exc
        return conn

    def release(self, conn: _Conn) -> None:
        """Back to the pool if the answer was read whole and the server keeps the connection; else closed."""
        if self._closed or not conn.reusable() or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.in_use = False
        conn.waiter = None
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let the transports run their close callbacks
