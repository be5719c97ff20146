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
handler). Header names and values with CR or LF are refused (no header injection); an answer over
``connection.MAX_ANSWER`` (256 MiB) is refused, so a runaway peer cannot exhaust the process.

Errors: ``ConnectFailed`` (OSError while connecting), ``TimeoutError`` (connect or idle), ``Disconnected``
(the server closed or broke the connection mid-answer), ``ProtocolError`` (an answer that is not HTTP/1.1),
``BadHeader`` (a header with CR or LF: only its name is told); all ``HttpError`` except the timeout. The
caller maps them (``clients.base.transport_error``). One connection and the answer read on it:
``clients/connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_lib
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from actors.cloud_proxy.clients.connection import (
    BadHeader,
    ConnectFailed,
    Connection,
    Disconnected,
    HttpError,
    ProtocolError,
    Response,
)

__all__ = ["BadHeader", "ConnectFailed", "Disconnected", "HttpError", "Pool", "ProtocolError", "Response"]

USER_AGENT = "User-Agent: llm-orchestra"


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
        self._idle: list[Connection] = []
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
                return Response(conn, idle, self.release)
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

    async def _checkout(self) -> tuple[Connection, bool]:
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

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    Connection, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
                )
        except OSError as exc:
            raise ConnectFailed(self.host, self.port, exc) from exc
        return conn

    def release(self, conn: Connection) -> None:
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
