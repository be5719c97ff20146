"""The gateway: the OpenAI-compatible HTTP front door (aiohttp, and a fast lane for light generation
requests: fastlane.py) and the clients' API keys.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /healthz

Several gateways may run side by side behind a load balancer; they share nothing but the bus. What it
hears from the bus (answers, chunks) and its timer are messages of ``messages.GatewayMsg``, matched in
``handle``; each HTTP request is a handler (handlers.py) given what it needs, never the actor, called by aiohttp or
by the fast lane, which takes each connection first and hands aiohttp what it does not read itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable
from typing import assert_never

from aiohttp import web
from nats.aio.msg import Msg

from actors.gateway.fastlane import Lane, close_lanes
from actors.gateway.handlers import Api
from actors.gateway.http import MAX_BODY, openai_errors, server_header
from actors.gateway.inbox import Inbox
from actors.gateway.keys import KeyStore
from actors.gateway.limits import KeyLimiter
from actors.gateway.messages import ChunkSeen, GatewayMsg, KeysTick, ResultSeen
from actors.gateway.offload import Offload
from bus import subjects
from bus.actor import Actor
from bus.fair import FairGate
from bus.pacer import Pacer
from schemas.config.models import CloudModel
from schemas.config.root import OrchestraConfig

KEY_REFRESH_S = 2.0


class Gateway(Actor):
    """The OpenAI-compatible HTTP front door."""

    name = "gateway"

    def __init__(self, cfg: OrchestraConfig, *, port: int | None = None, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self.port = cfg.gateway.port if port is None else port
        self.keys = KeyStore(cfg.gateway, cfg.data_dir)
        self.owners = {name: (m.provider if isinstance(m, CloudModel) else m.family) for name, m in cfg.models.items()}
        self.runner: web.AppRunner | None = None  # aiohttp: every request the fast lane does not take
        self.server: asyncio.Server | None = None  # the listening socket; each connection starts in the fast lane
        self.lanes: set[Lane] = set()  # connections the fast lane serves (closed at stop)
        self.grace = float(cfg.bus.shutdown_grace)  # what requests being answered get at stop, on either path
        self.bound_port: int | None = None
        self.limiter: KeyLimiter | None = None  # per-key rates, shared by every gateway (on_start)
        self.inbox: Inbox | None = None  # the answers to the requests it published (on_start)
        self.fair = FairGate(cfg.gateway.slots, cfg.gateway.max_waiting)  # per-key turns when all slots are busy
        self.heavy = FairGate(cfg.gateway.heavy_slots, cfg.gateway.max_waiting)  # big bodies' decode
        # heavy requests' round trips, paced while light requests are around
        self.pacer = Pacer(cfg.gateway.heavy_share, max_waiting=cfg.gateway.max_waiting)
        self.offload = Offload(cfg.gateway.offload_workers)  # big bodies' decode, in low-priority processes

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, help="listen port (default: gateway.port of the profile)")

    @classmethod
    def from_args(cls, cfg: OrchestraConfig, args: argparse.Namespace) -> Gateway:
        return cls(cfg, port=args.port)

    async def on_start(self) -> None:
        self.keys.load()
        self.limiter = KeyLimiter(await self.js.key_value(subjects.KV_KEY_USAGE), self.instance)
        self.inbox = Inbox(self.nc)
        await self.inbox.start(self.heard)
        app = web.Application(client_max_size=self.cfg.gateway.max_body, middlewares=[openai_errors])
        app[MAX_BODY] = self.cfg.gateway.max_body
        api = Api(
            self.cfg,
            keys=self.keys,
            owners=self.owners,
            limiter=self.limiter,
            inbox=self.inbox,
            nc=self.nc,
            publish=self.publish,
            fair=self.fair,
            heavy=self.heavy,
            pacer=self.pacer,
            offload=self.offload,
        )
        app.add_routes(api.routes())
        app.on_response_prepare.append(server_header)
        # at stop, aiohttp's requests get the grace the lane's get (not aiohttp's default 60 s)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=self.grace)
        await self.runner.setup()
        # a body over max_body is aiohttp's to refuse (413), whatever heavy_body says
        aiohttp_server, heavy = self.runner.server, min(self.cfg.gateway.heavy_body, self.cfg.gateway.max_body + 1)
        assert aiohttp_server is not None  # made by setup()

        def connection() -> Lane:
            return Lane(api.lane, aiohttp_server, heavy, self.lanes)

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(connection, self.cfg.gateway.host, self.port, reuse_address=True)
        self.bound_port = self.server.sockets[0].getsockname()[1] if self.server.sockets else self.port
        self.every("keys", KEY_REFRESH_S, KeysTick)
        self.log.info(
            "gateway listening on http://%s:%s/v1 (%d API keys)", self.cfg.gateway.host, self.bound_port, len(self.keys)
        )

    async def handle(self, msg: GatewayMsg) -> None:
        match msg:
            case ResultSeen() | ChunkSeen():
                if self.inbox is not None:
                    self.inbox.put(msg)
            case KeysTick():
                self.keys.refresh()
            case _:
                assert_never(msg)

    async def heard(self, msg: Msg) -> None:
        """The inbox subscription's callback: an answer to one of its requests becomes a message."""
        where = subjects.parse_answer(msg.subject)
        if where is None or where.kind == "failed":
            return
        wrap = ResultSeen if where.kind == "result" else ChunkSeen
        await self.handle(wrap(where.request_id, msg.data))

    async def on_stop(self) -> None:
        # no new connection; the lane's close here, aiohttp's in its cleanup, both at once with one grace
        closing: list[Awaitable[None]] = []
        if self.server is not None:
            self.server.close()
            closing.append(close_lanes(self.lanes, self.grace))
        if self.runner is not None:
            closing.append(self.runner.cleanup())
        for failed in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(failed, Exception):
                self.log.warning("closing the front door: %s", failed)
        if self.inbox is not None:
            with contextlib.suppress(Exception):
                await self.inbox.stop()
        await self.offload.close()
