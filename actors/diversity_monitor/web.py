"""The dashboard's HTTP side, on the monitor's aiohttp server beside ``/metrics``:

    GET  /dashboard                  the page (plain HTML + JS, no framework)
    GET  /dashboard/state            everything at once: state, chart points, event tail (JSON)
    GET  /dashboard/events           server-sent events: ``state`` and ``point`` each refresh, ``tail`` per event
    POST /dashboard/ack              {"alert_id": ...} -> an AckAlert command (header X-Orchestra: ack)
    GET  /dashboard/audit?id=&at=    a request's timeline (as ``orchestra audit`` replays it)
    GET  /dashboard/static/<file>    the page's own files; /dashboard/vendor/<file>: the charting library

On loopback (the default) the page is open to the machine's users, like the CLI. Bound anywhere else it
asks for the operator token (``<data_dir>/dashboard-token``, created 0600 on first start, never logged):
``/dashboard?token=...`` once sets a cookie, or ``Authorization: Bearer ...``. The ack needs a custom
header too, which a cross-site form cannot send. The helper holds no actor: it gets callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from actors.diversity_monitor.audit import audit_html
from bus.log import register_secret
from schemas.config.root import OrchestraConfig

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / ".vendor" / "dashboard"  # `make vendor`: npm install --prefix .vendor/dashboard uplot
UPLOT_FILES = {"uPlot.iife.min.js", "uPlot.min.css"}
COOKIE = "orchestra_dashboard"
TOKEN_FILE = "dashboard-token"
CLIENT_QUEUE = 256  # messages a slow page may lag behind before its stream is ended (its EventSource reconnects)
MAX_CLIENTS = 64  # live pages at once; more get a 503 with Retry-After (an operator page, not a public feed)
SSE_WRITE_S = 10.0  # a page that takes longer to take one message is gone: its stream is ended
MAX_ACK_BODY = 4096  # an acknowledgement is {"alert_id": "..."}
MAX_ALERT_ID = 256
# what an operator page sends with everything: no framing (its acknowledge button cannot be clickjacked), no MIME
# sniffing, no referrer (an audit link's request id stays on the page)
SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def loopback_host(request: web.Request) -> bool:
    """The request names a loopback host (a rebound DNS name, or a Host that is not one, is another site)."""
    try:
        return is_loopback(URL(f"http://{request.host}").host or "")
    except ValueError:
        return False


def _same(given: str, token: str) -> bool:
    """A constant-time token compare; a header that is not UTF-8 is simply not the token."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; "" and 0.0.0.0 listen everywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(path: Path) -> str:
    """The operator token, created (0600) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    token = path.read_text().strip()
    register_secret(token)
    return token


def vendor_dir(assets: str) -> Path:
    """Where the vendored uPlot files are (``assets`` or the repo's .vendor)."""
    base = Path(assets) if assets else VENDOR
    return base / "node_modules" / "uplot" / "dist" if (base / "node_modules").exists() else base


class Dashboard:
    """Routes and the SSE fan-out. ``state()`` builds the JSON state; ``ack`` and ``audit`` do the I/O."""

    def __init__(
        self,
        *,
        state: Callable[[], dict[str, Any]],
        history: Callable[[], dict[str, Any]],
        ack: Callable[[str, str], Awaitable[bool]],
        audit: Callable[[str, float | None], Awaitable[list[dict[str, Any]]]],
        token: str | None,
        assets: Path,
        token_file: Path | None = None,
    ) -> None:
        self.state, self.history, self.ack, self.audit = state, history, ack, audit
        self.token, self.assets, self.token_file = token, assets, token_file
        self.clients: set[asyncio.Queue[bytes | None]] = set()

    @classmethod
    def of(cls, cfg: OrchestraConfig, **io: Any) -> Dashboard:
        """The dashboard of a config: the token only off loopback, the vendored library's place."""
        board = cfg.monitor.dashboard
        if is_loopback(cfg.monitor.metrics_host):
            return cls(token=None, assets=vendor_dir(board.assets), **io)
        path = Path(board.token_file) if board.token_file else Path(cfg.data_dir) / TOKEN_FILE
        return cls(token=load_token(path), token_file=path, assets=vendor_dir(board.assets), **io)

    def announce(self, host: str, port: int) -> None:
        where = ""
        if self.token is not None:
            where = f" (off loopback: open it once with ?token=<the token in {self.token_file}>)"
        log.info("dashboard on http://%s:%d/dashboard%s", host, port, where)
        if not (self.assets / "uPlot.iife.min.js").is_file():
            log.warning("no charting library in %s: the dashboard shows no charts (run `make vendor`)", self.assets)

    def routes(self, app: web.Application) -> None:
        app.on_response_prepare.append(security_headers)
        app.router.add_get("/dashboard", self.page)
        app.router.add_get("/dashboard/", self.page)
        app.router.add_get("/dashboard/state", self.full_state)
        app.router.add_get("/dashboard/events", self.events)
        app.router.add_post("/dashboard/ack", self.post_ack)
        app.router.add_get("/dashboard/audit", self.audit_page)
        app.router.add_get("/dashboard/static/{name}", self.static)
        app.router.add_get("/dashboard/vendor/{name}", self.vendor)

    # --- access ----------------------------------------------------------------------------------
    def allowed(self, request: web.Request) -> bool:
        if self.token is None:  # loopback: only under a loopback name (a rebound DNS name is another site)
            return loopback_host(request)
        given = request.cookies.get(COOKIE, "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        return _same(given, self.token)

    def guard(self, request: web.Request) -> None:
        if not self.allowed(request):
            raise web.HTTPUnauthorized(text="the dashboard needs the operator token: open /dashboard?token=<token>\n")

    # --- pages -----------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        given = request.query.get("token")
        if self.token is not None and given is not None:
            if not _same(given, self.token):
                raise web.HTTPUnauthorized(text="wrong token\n")
            response = web.HTTPFound("/dashboard")  # the token leaves the address bar and the history
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/dashboard")
            raise response
        self.guard(request)
        return web.FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-store"})

    async def full_state(self, request: web.Request) -> web.Response:
        self.guard(request)
        response = web.json_response({**self.state(), **self.history()}, dumps=_dumps)
        response.enable_compression()  # an hour of points: megabytes of JSON at lab scale, a tenth gzipped
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        return self._file(request, STATIC, {"dashboard.js", "dashboard.css"})

    async def vendor(self, request: web.Request) -> web.StreamResponse:
        return self._file(request, self.assets, UPLOT_FILES)

    def _file(self, request: web.Request, base: Path, names: set[str]) -> web.StreamResponse:
        self.guard(request)
        name = request.match_info["name"]
        if name not in names or not (base / name).is_file():
            raise web.HTTPNotFound(text=f"{name}: not here (the charting library is vendored by `make vendor`)\n")
        return web.FileResponse(base / name)

    async def post_ack(self, request: web.Request) -> web.Response:
        self.guard(request)
        if request.headers.get("X-Orchestra") != "ack":
            raise web.HTTPForbidden(text="missing X-Orchestra: ack\n")
        if request.content_length is None or request.content_length > MAX_ACK_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_ACK_BODY, request.content_length or 0)
        try:
            body = await request.json()
            alert_id = body["alert_id"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise web.HTTPBadRequest(text='expected {"alert_id": "..."}\n') from exc
        if not isinstance(alert_id, str) or not 0 < len(alert_id) <= MAX_ALERT_ID:
            raise web.HTTPBadRequest(text='expected {"alert_id": "..."}\n')
        peer = request.remote or "?"
        if not await self.ack(alert_id, f"dashboard@{peer}"):
            raise web.HTTPNotFound(text=f"no open alert {alert_id}\n")
        return web.json_response({"acknowledged": alert_id})

    async def audit_page(self, request: web.Request) -> web.Response:
        self.guard(request)
        rid = request.query.get("id", "").strip()
        if not rid:
            raise web.HTTPBadRequest(text="?id=<request id>\n")
        try:
            at = float(request.query["at"]) if "at" in request.query else None
        except ValueError as exc:
            raise web.HTTPBadRequest(text="at: epoch seconds\n") from exc
        if at is not None and not (math.isfinite(at) and 0 <= at <= time.time() + 86400):
            raise web.HTTPBadRequest(text="at: epoch seconds, not in the future\n")
        records = await self.audit(rid, at)
        if request.query.get("format") == "json":
            return web.json_response(records, dumps=_dumps)
        return web.Response(text=audit_html(rid, records), content_type="text/html")

    # --- live ------------------------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        """The live stream. It ends (and the page's EventSource reconnects for a fresh state) when the page lags
        CLIENT_QUEUE messages behind or takes SSE_WRITE_S to take one, and at stop."""
        self.guard(request)
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text="too many live pages open\n", headers={"Retry-After": "10"})
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(queue)
        try:
            item: bytes | None = _sse("state", self.state())
            while item is not None:
                await asyncio.wait_for(response.write(item), SSE_WRITE_S)
                item = await queue.get()
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()  # it does not read: what waits for it is dropped, the connection cut
        except ConnectionResetError:
            pass
        finally:
            self.clients.discard(queue)
        return response

    def broadcast(self, kind: str, payload: Any) -> None:
        if not self.clients:
            return
        data = _sse(kind, payload)
        for queue in list(self.clients):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:  # a page that stopped reading: its stream ends (its EventSource reconnects)
                self.clients.discard(queue)
                _end(queue)

    def close(self) -> None:
        for queue in list(self.clients):
            _end(queue)
        self.clients.clear()


def _end(queue: asyncio.Queue[bytes | None]) -> None:
    """End a live stream: what it has not sent is dropped, then the end."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def _sse(kind: str, payload: Any) -> bytes:
    return f"event: {kind}\ndata: {_dumps(payload)}\n\n".encode()
