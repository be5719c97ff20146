"""Storing a message in JetStream through server restarts and leader elections, written once.

    ack = await store(js, subject, data, headers={"Nats-Msg-Id": id}, timeout=30)

A publish that times out, finds no responder (a stream without a leader for a moment: a node of a
cluster died, a raft election runs) or meets a reconnecting connection is sent again with the same
headers until ``timeout``: with a ``Nats-Msg-Id`` the server keeps one copy, however many were sent.

``js`` is nats-py's JetStream context or a :class:`Publisher`, the actors' own: the same publish with
less work per message (every request is stored three times on its way, by three processes). nats-py's
``js.publish`` makes a fresh random reply token (a ``getrandom`` system call), wraps the wait in
``asyncio.wait_for`` and reads the server's ack with ``json`` into a dataclass; a Publisher numbers its
replies on one subscription of its own, waits on a plain future with one timer, and decodes the ack with
msgspec. What it stores, and the errors it raises, are nats-py's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

RETRYABLE = (
    nats.errors.TimeoutError,
    TimeoutError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)


class Stores(Protocol):
    async def publish(
        self, subject: str, payload: bytes = b"", timeout: float | None = None, *, headers: dict[str, str] | None = None
    ) -> PubAck: ...


class _Error(msgspec.Struct):
    code: int = 0
    err_code: int | None = None
    description: str | None = None


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: _Error | None = None


_ACK = msgspec.json.Decoder(_Ack)


def read_ack(msg: Msg) -> PubAck:
    """The server's answer to a JetStream publish: its PubAck, or nats-py's exception for it."""
    headers = msg.headers
    if headers and headers.get("Status") == "503":  # no stream listens on the subject (or no leader yet)
        raise NoStreamResponseError
    try:
        ack = _ACK.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise APIError(description=f"unreadable ack: {exc}") from None
    if ack.error is not None:
        APIError.from_error(msgspec.structs.asdict(ack.error))  # raises the typed error
    return PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError)


class Publisher:
    """JetStream publishes on one connection, their acks on one subscription (``<inbox>.<n>``)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = ""
        self._sub: Any = None
        self._starting = asyncio.Lock()  # one subscription, however many publishes start at once
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._count = 0

    @property
    def waiting(self) -> int:
        """Publishes waiting for their ack."""
        return len(self._waiting)

    @property
    def sent(self) -> int:
        """Publishes sent so far (each try of ``store`` counts)."""
        return self._count

    async def _start(self) -> None:
        async with self._starting:
            if self._sub is None:
                prefix = self.nc.new_inbox() + "."
                self._sub = await self.nc.subscribe(prefix + "*", cb=self._on_ack, pending_msgs_limit=-1)
                self._prefix = prefix

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(
        self, subject: str, payload: bytes = b"", timeout: float | None = None, *, headers: dict[str, str] | None = None
    ) -> PubAck:
        if self._sub is None:
            await self._start()
        self._count += 1
        token = str(self._count)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(5.0 if timeout is None else timeout, _expire, future)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        return read_ack(msg)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        for future in self._waiting.values():
            _expire(future)
        self._waiting.clear()
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is closing already
                pass


async def store(
    js: Stores, subject: str, data: bytes, *, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> PubAck:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            wait = min(5.0, max(0.05, deadline - time.monotonic()))
            return await js.publish(subject, data, headers=headers or None, timeout=wait)
        except RETRYABLE:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
