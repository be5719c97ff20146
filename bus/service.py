"""Request/reply services on core NATS, answering with typed errors.

Server side: ``ServiceSpec(subject, handler, codec)``; the handler takes the decoded request and
returns a Struct (the body). Bad input becomes a ``bad_request`` reply naming the field; a
``ServiceCallError`` raised by the handler is passed on; anything else is logged and becomes
``internal``. The actor never dies of a bad request.

Client side: ``await call(nc, subject, payload, reply_codec, timeout)`` returns the decoded body or
raises ServiceCallError (``timeout``, ``unavailable`` when no service listens, or the service's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bus.errors import ServiceCallError
from schemas.codec import SERVICE_REPLY, Codec, ServiceReply, encode
from schemas.errors import ErrorInfo, SchemaError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServiceSpec:
    subject: str
    handler: Callable[[Any], Awaitable[Any]]
    codec: Codec[Any] | None = None  # None: the handler gets the raw bytes
    queue: str | None = "svc"  # instances share the load; None: every instance answers
    concurrency: int = 256


def _reply(ok: bool, body: Any = None, error: ErrorInfo | None = None) -> bytes:
    return encode(ServiceReply(ok=ok, body=msgspec.Raw(encode(body)), error=error))


class ServiceRunner:
    def __init__(self, nc: NATS, spec: ServiceSpec, *, owner: str) -> None:
        self.nc, self.spec, self.owner = nc, spec, owner
        self._sub: Any = None
        self._slots = asyncio.Semaphore(spec.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.spec.subject, queue=self.spec.queue or "", cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        async with self._slots:
            try:
                request = self.spec.codec.decode(msg.data) if self.spec.codec else msg.data
                body = await self.spec.handler(request)
                data = _reply(True, body)
            except SchemaError as exc:
                data = _reply(False, error=exc.to_info())
            except ServiceCallError as exc:
                data = _reply(False, error=exc.info)
            except asyncio.CancelledError:
                data = _reply(False, error=ErrorInfo.of("unavailable", "the service is shutting down"))
                if msg.reply:
                    with contextlib.suppress(Exception):
                        await msg.respond(data)
                raise
            except Exception as exc:
                log.exception("%s: service %s failed", self.owner, self.spec.subject)
                data = _reply(False, error=ErrorInfo.of("internal", f"{type(exc).__name__} in {self.spec.subject}"))
            if msg.reply:
                with contextlib.suppress(Exception):
                    await msg.respond(data)

    async def stop(self, timeout: float = 2.0) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


async def call(nc: NATS, subject: str, payload: Any, reply: Codec[T], timeout: float = 2.0) -> T:
    """Call a service; returns the decoded body or raises ServiceCallError."""
    data = payload if isinstance(payload, bytes) else encode(payload)
    try:
        msg = await nc.request(subject, data, timeout=timeout)
    except nats.errors.NoRespondersError as exc:
        raise ServiceCallError(ErrorInfo.of("unavailable", f"no service answers on {subject}")) from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        raise ServiceCallError(ErrorInfo.of("timeout", f"{subject} did not answer within {timeout:g}s")) from exc
    try:
        envelope = SERVICE_REPLY.decode(msg.data)
    except SchemaError as exc:
        raise ServiceCallError(ErrorInfo.of("internal", f"malformed reply from {subject}: {exc}")) from exc
    if not envelope.ok:
        raise ServiceCallError(envelope.error or ErrorInfo.of("internal", f"{subject} failed"))
    try:
        return reply.decode(envelope.body)
    except SchemaError as exc:
        raise ServiceCallError(ErrorInfo.of("internal", f"unexpected reply from {subject}: {exc}")) from exc
