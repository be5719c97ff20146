"""Real local receivers for the notifier tests: a Slack-compatible webhook (aiohttp) and an SMTP server
(aiosmtpd), both on 127.0.0.1 with a port the OS picks, started and stopped by the test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Webhook:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    status: int = 200  # what the receiver answers (a test can make it fail)


@asynccontextmanager
async def webhook_receiver(path: str = "/hooks/T000/B000/secret-token") -> AsyncIterator[Webhook]:
    hook = Webhook(url="")

    async def receive(request: web.Request) -> web.Response:
        hook.posts.append(await request.json())
        hook.paths.append(request.path)
        return web.Response(status=hook.status, text="ok")

    app = web.Application()
    app.router.add_post(path, receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hook.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield hook
    finally:
        await runner.cleanup()


@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        self.box.messages.append(message_from_bytes(content))
        self.box.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@asynccontextmanager
async def smtp_receiver(tls: ssl.SSLContext | None = None) -> AsyncIterator[Mailbox]:
    """``tls``: the server offers STARTTLS with this context and refuses mail until the client starts it."""
    box = Mailbox(port=0)
    handler = _Handler(box)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="127.0.0.1", tls_context=tls, require_starttls=tls is not None),
        "127.0.0.1",
        0,
    )
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()
