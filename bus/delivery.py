"""One message handed out by a durable pull consumer (bus/consumer.py), settled exactly once.

d.data, d.subject, d.headers        the message
d.num_delivered, d.stream_seq       from its ack subject (no nats-py metadata parse)
d.hold()                            keep it past the handler; the caller settles it later
await d.ack() / nak() / term() / dead_letter(reason)
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Protocol

from nats.aio.msg import Msg


class Settles(Protocol):
    """What a delivery tells its consumer: its slot is free; copy it to the dead letters."""

    def release(self, delivery: Delivery) -> None: ...

    async def dead_letter(self, d: Delivery, reason: str) -> None: ...


class Delivery:
    """One delivered message, settled exactly once (ack / nak / term)."""

    __slots__ = ("msg", "_consumer", "received", "last_progress", "held", "settled", "_meta")

    def __init__(self, msg: Msg, consumer: Settles) -> None:
        self.msg = msg
        self._consumer = consumer
        self.received = time.monotonic()
        self.last_progress = self.received
        self.held = False
        self.settled = False
        self._meta: tuple[int, int, float] | None = None

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def headers(self) -> dict[str, str]:
        return self.msg.headers or {}

    def _fields(self) -> tuple[int, int, float]:  # (deliveries, stream seq, stored at); nats-py's parse: 12 µs
        if self._meta is None:
            t = (self.msg.reply or "").split(".")  # $JS.ACK.<stream>.<consumer>.<n>.<sseq>.<cseq>.<ns>.<pending>
            if len(t) == 9 and t[1] == "ACK":
                self._meta = (int(t[4]), int(t[5]), datetime.fromtimestamp(int(t[7]) / 1e9, UTC).timestamp())
            else:  # with a domain (or anything else): as nats-py reads it
                m = self.msg.metadata
                self._meta = (m.num_delivered, m.sequence.stream, m.timestamp.timestamp() if m.timestamp else 0.0)
        return self._meta

    @property
    def num_delivered(self) -> int:
        return int(self._fields()[0])

    @property
    def stream_seq(self) -> int:
        return int(self._fields()[1])

    @property
    def published_at(self) -> float:
        return self._fields()[2] or time.time()

    def hold(self) -> Delivery:
        """Keep the message unacknowledged after the handler returns; the caller settles it later.
        It keeps its concurrency slot and gets in_progress heartbeats until then."""
        self.held = True
        return self

    async def in_progress(self) -> None:
        self.last_progress = time.monotonic()
        if not self.settled:
            with contextlib.suppress(Exception):
                await self.msg.in_progress()

    async def ack(self) -> None:
        if self._settle():
            await self.msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        if self._settle():
            await self.msg.nak(delay=delay if delay else None)

    async def term(self) -> None:
        if self._settle():
            await self.msg.term()

    async def dead_letter(self, reason: str) -> None:
        """Copy to the dead-letter subject with the reason, then terminate."""
        if not self.settled:
            await self._consumer.dead_letter(self, reason)

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self._consumer.release(self)
        return True
