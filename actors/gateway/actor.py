"""The gateway: the OpenAI-compatible HTTP front door (aiohttp) and the clients' API keys.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /healthz

Several gateways may run side by side behind a load balancer; they share nothing but the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web

from actors.fair import FairGate
from actors.gateway.handlers import MAX_BODY, Api, openai_errors
from actors.gateway.inbox import Inbox
from actors.gateway.keys import KeyStore
from actors.gateway.limits import KeyLimiter
from bus import subjects
from bus.actor import Actor
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
        self.runner: web.AppRunner | None = None
        self.bound_port: int | None = None
        self.limiter: KeyLimiter | None = None  # per-key rates, shared by every gateway (on_start)
        self.fair = FairGate(cfg.gateway.slots, cfg.gateway.max_waiting)  # per-key turns when all slots are busy
        self.heavy = FairGate(cfg.gateway.heavy_slots, cfg.gateway.max_waiting)  # big bodies' decode + publish

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
        await self.inbox.start()
        app = web.Application(client_max_size=self.cfg.gateway.max_body, middlewares=[openai_errors])
        app[MAX_BODY] = self.cfg.gateway.max_body
        app.add_routes(Api(self).routes())
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.cfg.gateway.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        self.spawn("keys", self.refresh_keys)
        self.log.info(
            "gateway listening on http://%s:%s/v1 (%d API keys)", self.cfg.gateway.host, self.bound_port, len(self.keys)
        )

    async def refresh_keys(self) -> None:
        while True:
            await asyncio.sleep(KEY_REFRESH_S)
            self.keys.refresh()

    async def on_stop(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
        with contextlib.suppress(Exception):
            await self.inbox.stop()
