"""The cloud_proxy's lean HTTP/1.1 client (actors/cloud_proxy/clients/http1.py) against real local
servers: aiohttp's web server for well-behaved answers (length, chunked, gzip, keep-alive, HTTPS with a
self-signed CA made by openssl), and raw asyncio servers for what a misbehaving peer does (a body that
ends at close, a connection dropped mid-answer or while idle in the pool, silence, garbage)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from actors.cloud_proxy.clients import connection
from actors.cloud_proxy.clients.http1 import BadHeader, ConnectFailed, Disconnected, Pool, ProtocolError
from tests.support.wait import eventually

Raw = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request off the wire (head and Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection runs ``serve``; counts connections."""

    def __init__(self, serve: Raw) -> None:
        self.serve, self.connections = serve, 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.serve(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def replying(answer: bytes, then: str = "wait") -> Raw:
    """A peer that reads one request, writes ``answer``, then: ``wait`` for the client's EOF, ``close``
    at once, or ``drop-next``: read the next request on the connection and close it unanswered."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if then == "wait":
            await reader.read()
        elif then == "drop-next":
            await read_request(reader)

    return serve


@contextlib.asynccontextmanager
async def pool_on(serve: Raw) -> AsyncIterator[tuple[Pool, RawServer]]:
    """A raw peer running ``serve`` and a pool to it, both closed after."""
    server = RawServer(serve)
    async with server as base:
        pool = Pool(base)
        try:
            yield pool, server
        finally:
            await pool.close()


@pytest.fixture
async def web_server() -> AsyncIterator[tuple[str, list[int]]]:
    """aiohttp's server: /json (length), /chunked (three pieces, 50 ms apart), /gzip, /echo-headers;
    the list holds the client port of every request (one port per connection)."""
    peers: list[int] = []

    async def json_answer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        body = await request.read()
        return web.json_response({"got": body.decode(), "path": request.path_qs})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b"one ", b"two ", b"three"):
            await resp.write(piece)
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"squeezed " * 100), headers={"Content-Encoding": "gzip"})

    async def echo_headers(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    app = web.Application()
    app.router.add_post("/json", json_answer)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/gzip", gzipped)
    app.router.add_post("/echo-headers", echo_headers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", peers
    await runner.cleanup()


async def test_answers_are_read_whole_and_connections_kept_alive(web_server: tuple[str, list[int]]) -> None:
    base, peers = web_server
    pool = Pool(base)
    for i in range(3):
        async with await pool.request("POST", f"{base}/json?n={i}", {}, b'{"a": 1}', idle=5) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("application/json")
            assert await resp.read() == b'{"got": "{\\"a\\": 1}", "path": "/json?n=%d"}' % i
    assert len(peers) == 3 and len(set(peers)) == 1  # one connection for the three
    await pool.close()


async def test_a_chunked_body_comes_piece_by_piece(web_server: tuple[str, list[int]]) -> None:
    base, _ = web_server
    pool = Pool(base)
    async with await pool.request("POST", "/chunked", {}, b"", idle=5) as resp:
        pieces = [piece async for piece in resp.chunks()]
    assert b"".join(pieces) == b"one two three"
    assert len(pieces) == 3  # each as it was sent, 50 ms apart
    await pool.close()


async def test_a_gzip_body_is_inflated(web_server: tuple[str, list[int]]) -> None:
    base, _ = web_server
    pool = Pool(base)
    async with await pool.request("POST", "/gzip", {}, b"", idle=5) as resp:
        assert await resp.read() == b"squeezed " * 100
    await pool.close()


async def test_the_request_carries_host_length_and_the_given_headers(web_server: tuple[str, list[int]]) -> None:
    base, _ = web_server
    pool = Pool(base)
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    async with await pool.request("POST", "/echo-headers", headers, b"{}", idle=5) as resp:
        got = json.loads(await resp.read())
    assert got["Host"] == base.removeprefix("http://")
    assert got["Content-Length"] == "2"
    assert got["Authorization"] == "Bearer sk-test"
    assert got["User-Agent"] == "llm-orchestra"
    await pool.close()


async def test_a_header_with_a_line_break_is_refused_naming_only_the_header() -> None:
    pool = Pool("http://127.0.0.1:9")  # nothing is sent: refused before connecting
    with pytest.raises(BadHeader) as caught:
        await pool.request("POST", "/", {"Authorization": "Bearer sk-x\r\nX-Evil: 1"}, b"", idle=1)
    assert "Authorization" in str(caught.value) and "sk-x" not in str(caught.value)
    await pool.close()


async def test_a_url_of_another_origin_and_credentials_in_a_url_are_refused(web_server: tuple[str, list[int]]) -> None:
    base, _ = web_server
    pool = Pool(base)
    with pytest.raises(ValueError, match="not on this pool's origin"):
        await pool.request("POST", "http://example.com/v1", {}, b"", idle=1)
    await pool.close()
    with pytest.raises(ValueError, match="credentials in a provider URL"):
        Pool("https://user:secret@example.com/v1")
    with pytest.raises(ValueError, match="not an http"):
        Pool("ftp://example.com/")


async def test_an_informational_answer_before_the_real_one_is_skipped() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
            writer.write(b"HTTP/1.1 201 Created\r\nX-Real: yes\r\nContent-Length: 4\r\n\r\nreal")
            await writer.drain()

    server = RawServer(serve)
    async with server as base:
        pool = Pool(base)
        for _ in range(2):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                assert (resp.status, dict(resp.headers)) == (201, {"x-real": "yes", "content-length": "4"})
                assert await resp.read() == b"real"
        assert server.connections == 1
        await pool.close()


async def test_bytes_sent_to_an_idle_pooled_connection_retire_it() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")  # nobody asked for it
        await writer.drain()
        await reader.read()

    server = RawServer(serve)
    async with server as base:
        pool = Pool(base)
        async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
            assert await resp.read() == b"ok"
        await eventually(lambda: pool._idle and pool._idle[0].closed)
        async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
            assert await resp.read() == b"ok"  # a new connection's answer, not the stale one
        assert server.connections == 2
        await pool.close()


async def test_a_corrupt_gzip_body_is_a_protocol_error() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n\r\nnot gzip"
    async with pool_on(replying(answer)) as (pool, _):
        with pytest.raises(ProtocolError, match="compressed body is corrupt"):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                await resp.read()


async def test_a_body_that_ends_at_close_is_read_and_the_connection_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end"
    async with pool_on(replying(answer, then="close")) as (pool, server):
        for _ in range(2):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                assert await resp.read() == b"until the end"
        assert server.connections == 2


async def test_a_pooled_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    # keep-alive answered, then the server drops the connection anyway
    async with pool_on(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", then="close")) as (pool, server):
        for _ in range(3):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                assert await resp.read() == b"ok"
            await eventually(lambda: pool._idle and pool._idle[0].closed)  # the server's close has arrived
        assert server.connections == 3


async def test_a_request_on_a_reused_connection_closed_without_a_byte_is_sent_again_on_a_new_one() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with pool_on(replying(ok, then="drop-next")) as (pool, server):
        for _ in range(3):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                assert await resp.read() == b"ok"
        assert server.connections == 3  # requests 2 and 3 each found their connection closed, and retried


async def test_a_new_connection_closed_without_a_byte_is_not_retried() -> None:
    async with pool_on(replying(b"", then="close")) as (pool, server):
        with pytest.raises(Disconnected, match="before the request was complete"):
            await pool.request("POST", "/", {}, b"x", idle=5)
        assert server.connections == 1


async def test_a_connection_dropped_mid_answer_is_disconnected() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part"
    async with pool_on(replying(answer, then="close")) as (pool, _):
        with pytest.raises(Disconnected, match="before the answer was complete"):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                await resp.read()


async def test_silence_past_the_idle_timeout_is_a_timeout_and_the_connection_is_dropped() -> None:
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # says nothing until the client gives up (EOF)
        closed.set()

    async with RawServer(serve) as base:
        pool = Pool(base)
        with pytest.raises(TimeoutError):
            await pool.request("POST", "/", {}, b"x", idle=0.2)
        await asyncio.wait_for(closed.wait(), 5)
        await pool.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not valid HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc", "encoded as 'br'"),
    ],
    ids=["garbage instead of HTTP", "a body encoding not asked for"],
)
async def test_an_answer_that_cannot_be_read_is_a_protocol_error(answer: bytes, error: str) -> None:
    async with pool_on(replying(answer)) as (pool, _):
        with pytest.raises(ProtocolError, match=error):
            await pool.request("POST", "/", {}, b"x", idle=5)


async def test_an_answer_larger_than_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "MAX_ANSWER", 1000)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    async with pool_on(replying(answer)) as (pool, _):
        with pytest.raises(ProtocolError, match="larger than 1000 bytes"):
            async with await pool.request("POST", "/", {}, b"x", idle=5) as resp:
                await resp.read()
        assert not pool._idle  # the connection was dropped


async def test_nothing_listening_is_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = Pool(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectFailed, match=f"cannot connect to 127.0.0.1:{port}"):
        await pool.request("POST", "/", {}, b"x", idle=5)
    await pool.close()


async def test_an_answer_left_half_read_closes_its_connection(web_server: tuple[str, list[int]]) -> None:
    base, peers = web_server
    pool = Pool(base)
    async with await pool.request("POST", "/chunked", {}, b"", idle=5) as resp:
        async for _ in resp.chunks():
            break  # the caller stops after the first piece (a cancelled stream)
    async with await pool.request("POST", "/json", {}, b"{}", idle=5) as resp:
        assert resp.status == 200
        await resp.read()
    assert pool._idle and len(pool._idle) == 1  # only the second, read whole, went back to the pool
    await pool.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificates"

    def run(*argv: str) -> None:
        subprocess.run([openssl, *argv], cwd=tmp_path, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=orchestra test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem",
        "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return tmp_path / "ca.pem", tmp_path / "srv.pem", tmp_path / "srv.key"


async def test_https_verifies_the_server_against_the_ca(tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="over tls")

    app = web.Application()
    app.router.add_post("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        trusted = Pool(f"https://127.0.0.1:{port}", ssl=ssl.create_default_context(cafile=str(ca)))
        for _ in range(2):
            async with await trusted.request("POST", "/", {}, b"", idle=5) as resp:
                assert await resp.read() == b"over tls"
        assert len(trusted._idle) == 1
        await trusted.close()
        untrusted = Pool(f"https://127.0.0.1:{port}")  # the system's CAs do not know this one
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await untrusted.request("POST", "/", {}, b"", idle=5)
        await untrusted.close()
    finally:
        await runner.cleanup()
