"""The gateway's fast lane: light generation requests answered without aiohttp's per-request machinery.

Every connection starts here. A request is taken by the lane when its head is plain and its body small:

    POST /v1/chat/completions or /v1/completions, HTTP/1.1, one Content-Length below ``gateway.heavy_body``
    (and not over ``gateway.max_body``), no Transfer-Encoding, Content-Encoding, Expect or Upgrade, a head under
    16 KB of ordinary header lines, each given once

and the lane runs the same handler aiohttp would (handlers.py), writing its answer itself. Anything else (another
path or method, HTTP/1.0, a chunked, oversized or expected body, a head the lane does not read) hands the
connection over to aiohttp at that request's first byte, for the rest of its life: aiohttp's parser, limits and
refusals stay the front door's for every request the lane does not take. What the lane reads is a strict subset of
what aiohttp accepts (wire.py), so no head is read two ways; a head is handed over at the first byte that rules
the lane out (a bare LF, a control byte), not at a timeout. Requests on one connection are answered in order: a
pipelined one waits until the answer before it has been read by the client (a client that does not read holds up
only itself). An answer that has begun is never followed by another: a bug after its head closes the
connection. A connection silent for 75 s while none of its requests is being answered is closed.

Why: aiohttp spends ~130 µs of CPU per request in its protocol, request and response objects on this machine (a
bare protocol: ~25 µs for the same round trip); the lane takes 15-20 % off the gateway's CPU per request, measured
side by side in the full stack (docs/benchmarks.md, issue 19). The latency a request sees did not move beyond the
noise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from actors.gateway.http import internal_error
from actors.gateway.lanerequest import LaneRequest, LaneStream
from actors.gateway.wire import KEEPALIVE_S, MAX_HEAD, Headers, head_bytes, read_head, scan_head

log = logging.getLogger("actors.gateway.handlers")

LaneHandler = Callable[[LaneRequest], Awaitable[web.StreamResponse | LaneStream]]


class Lane(asyncio.Protocol):
    """One client connection while the lane serves it (see the module's docstring)."""

    def __init__(
        self, handler: LaneHandler, fallback: Callable[[], asyncio.Protocol], heavy: int, lanes: set[Lane]
    ) -> None:
        self._handler = handler
        self._fallback = fallback  # aiohttp's RequestHandler for a connection handed over
        self._heavy = heavy
        self._lanes = lanes
        self._buffer = bytearray()
        self._scanned = 0  # where the unfinished head's first unchecked line starts (a packet checks only what is new)
        self._head: tuple[int, str, dict[str, str], int, bool] | None = None  # read, its body still coming
        self._busy = False  # a request is being answered: the next one waits in the buffer
        self._answered = False  # the request being answered has had its head written: no other answer may follow
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._idle: asyncio.TimerHandle | None = None
        self._heard = 0.0  # loop time the client last sent something
        self._drained: asyncio.Future[None] | None = None  # set while the client does not read our writes
        self._task: asyncio.Task[None] | None = None
        self._close_after = False
        self._stopping = False  # the gateway stops: close once the request being answered is
        self._paused = False  # reading paused: the buffer holds enough requests to answer first

    @property
    def busy(self) -> bool:
        """A request is being answered."""
        return self._busy

    @property
    def waiting_for_client(self) -> bool:
        """The client does not read what was written: nothing more is answered until it does."""
        return self._drained is not None and not self._drained.done()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as a request."""
        return len(self._buffer)

    # --- asyncio's side --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._lanes.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lanes.discard(self)
        self._transport = None
        if self._idle is not None:
            self._idle.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # a writer waiting wakes and finds no transport

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._heard = self._loop.time()
        if not self._busy:
            self._next()
        elif len(self._buffer) > MAX_HEAD + self._heavy and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # a client pipelining far ahead waits for its answers

    # --- requests --------------------------------------------------------------------------------
    def _next(self) -> None:
        """Take the next whole request from the buffer, or hand the connection over, or wait for more bytes."""
        transport = self._transport
        if transport is None or self._close_after:
            return
        buffer = self._buffer
        if self._head is None:  # its head is read once, however many packets its body comes in
            end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3), MAX_HEAD)
            if end < 0:
                scanned = scan_head(buffer, self._scanned)
                if scanned < 0 or len(buffer) >= MAX_HEAD:
                    self._hand_over()  # not a head the lane reads: aiohttp answers it now, not at a timeout
                else:
                    self._scanned = scanned
                return
            taken = read_head(bytes(buffer[:end]), self._heavy)
            if taken is None:
                self._hand_over()
                return
            self._head = (end + 4, *taken)
        start, path, headers, length, keep_alive = self._head
        if len(buffer) < start + length:
            return  # the body is still coming
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        self._head, self._scanned = None, 0
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._busy, self._answered = True, False
        request = LaneRequest(path, Headers(headers), body, keep_alive, self)
        self._task = self._loop.create_task(self._answer(request))

    async def _answer(self, request: LaneRequest) -> None:
        try:
            response = await self._handler(request)
        except (ConnectionResetError, asyncio.CancelledError):
            self.abort()
            return
        except Exception:
            log.exception("gateway: unexpected error on %s %s", request.method, request.path)
            response = internal_error()
        keep_alive = request.keep_alive
        if self._answered and not isinstance(response, LaneStream):  # a bug after its head, or a second answer:
            log.error("gateway: %s %s: its answer had begun; closing", request.method, request.path)
            self.abort()  # another would be read as the next request's
            return
        if isinstance(response, LaneStream):
            if not response.done:  # a stream the handler left open is ended, as aiohttp ends it
                try:
                    await response.write_eof()
                except ConnectionResetError:
                    self.abort()
                    return
        else:
            if not isinstance(response, web.Response):  # a handler of the lane answers a Response or a LaneStream
                log.error("gateway: %s %s answered with %r", request.method, request.path, type(response).__name__)
                response = internal_error()
            try:
                keep_alive = self._write_response(response, keep_alive)
            except ValueError:  # a header no HTTP head may carry (a line break, a character beyond latin-1)
                log.exception("gateway: %s %s: a header that cannot be sent", request.method, request.path)
                keep_alive = self._write_response(internal_error(), keep_alive)
            await self._drain()  # the client reads this answer before the next request is taken
        self._done(keep_alive)

    def _done(self, keep_alive: bool) -> None:
        self._busy = False
        self._task = None
        transport = self._transport
        if transport is None:
            return
        if not keep_alive or self._stopping:
            self._close_after = True
            transport.close()
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self._arm_idle()
        if self._buffer:
            self._next()

    def _hand_over(self) -> None:
        """aiohttp reads this connection from the current request on."""
        transport = self._transport
        if transport is None:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._lanes.discard(self)
        self._transport = None
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._drained is not None and not self._drained.done():
            protocol.pause_writing()  # its flow control starts where ours is (answers are drained first: rare)
        data, self._buffer = bytes(self._buffer), bytearray()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        protocol.data_received(data)

    def _arm_idle(self, after: float | None = None) -> None:
        self._idle = self._loop.call_later(KEEPALIVE_S if after is None else after, self._quiet)

    def _quiet(self) -> None:
        """The idle timer: a connection silent for KEEPALIVE_S while none of its requests is answered is closed
        (one still sending a request is not)."""
        left = self._heard + KEEPALIVE_S - self._loop.time()
        if left > 0:
            self._arm_idle(left)
        else:
            self.abort()

    def close(self) -> asyncio.Task[None] | None:
        """The gateway stops: an idle connection is closed now, one answering a request once it has answered
        (the task returned, for the caller to wait on)."""
        if self._busy and self._task is not None:
            self._stopping = True
            return self._task
        self.abort()
        return None

    def abort(self) -> None:
        self._close_after = True
        if self._transport is not None:
            self._transport.close()

    # --- writing ---------------------------------------------------------------------------------
    def write_head(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], *, chunked: bool, keep_alive: bool
    ) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(head_bytes(status, reason, headers, chunked=chunked, keep_alive=keep_alive))
        self._answered = True

    async def write_body(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(data)
        await self._drain()
        if self._transport is None:
            raise ConnectionResetError("the client went away")

    async def _drain(self) -> None:
        """Wait while the client does not read what was written (woken too when it goes)."""
        drained = self._drained
        if drained is not None and not drained.done():
            await drained

    def _write_response(self, response: web.Response, keep_alive: bool) -> bool:
        """Write a whole answer; whether the connection stays open after it."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False  # the client went away: nobody to answer
        body = response.body
        payload = body if isinstance(body, bytes) else b""
        if response.keep_alive is False:
            keep_alive = False  # the handler closes this connection (force_close)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]  # repeats kept
        headers.append(("Content-Length", str(len(payload))))
        head = head_bytes(response.status, response.reason, headers, chunked=False, keep_alive=keep_alive)
        transport.write(head + payload)  # one write, one segment: the client wakes once, with all of it
        self._answered = True
        return keep_alive


async def close_lanes(lanes: set[Lane], grace: float) -> None:
    """Close every connection the lane serves, letting the requests being answered finish for ``grace`` seconds
    (as aiohttp lets its own finish), then cancelling what is left."""
    busy = [task for lane in list(lanes) if (task := lane.close()) is not None]
    if busy:
        _, late = await asyncio.wait(busy, timeout=grace)
        for task in late:
            task.cancel()
    for lane in list(lanes):
        lane.abort()
