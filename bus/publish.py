"""Storing a message in JetStream through server restarts and leader elections, written once.

    ack = await store(js, subject, data, headers={"Nats-Msg-Id": id}, timeout=30)

A publish that times out, finds no responder (a stream without a leader for a moment: a node of a
cluster died, a raft election runs) or meets a reconnecting connection is sent again with the same
headers until ``timeout``: with a ``Nats-Msg-Id`` the server keeps one copy, however many were sent."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError

RETRYABLE = (
    nats.errors.TimeoutError,
    TimeoutError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)


async def store(
    js: JetStreamContext, subject: str, data: bytes, *, headers: dict[str, str] | None = None, timeout: float = 30.0
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
