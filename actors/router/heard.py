"""What the router hears on the results subjects (core subscriptions; every instance hears everything,
the one holding the request acts): outcomes, handled when they matter to someone, and attempt failures.

    held(flow, subject)          the request id of an answer's subject, when this instance holds it
    await outcome_seen(flow, m)  a stored outcome: the request is finished (flow.finished)
    await failure_seen(flow, m)  an attempt failed: fall back (flow.failed), at once

When a worker stores a request's outcome, the gateway has the answer already (it listens on the same
subject); what is left for the router is bookkeeping: release the request (ack its REQUESTS delivery),
stop the attempt's timer, count the target's latency. Done at that very moment, it competes for a CPU with
the gateway writing the answer (on two vCPUs the router's handling was most of what ran while the gateway
waited, `bench/timeline.py`). So an outcome is held with the others of the next ``delay`` seconds and
handled after, together (their acks leave in one write), unless something waits on it:

    urgent(msg) -> handled at once: a fan-out member's outcome (its parent's answer is collected from it)
    else        -> handled ``delay`` later, in arrival order, in one task

    feed = OutcomeFeed(urgent, handle, delay=0.02)
    await feed.heard(msg)      # the core subscription's callback
    await feed.drain()         # at stop: what is held is handled now, and waited for

Attempt failures are not fed here: a fallback is on the client's path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from actors.router.flow import Flow
from bus import subjects
from bus.linger import Linger
from schemas.codec import ATTEMPT_FAILED, OUTCOME
from schemas.errors import SchemaError

log = logging.getLogger(__name__)


def held(flow: Flow, subject: str) -> str | None:
    """The request id of an answer's subject, when this instance holds that request (else None)."""
    where = subjects.parse_answer(subject)
    return where.request_id if where is not None and where.request_id in flow.pending else None


def handled_now(flow: Flow, msg: Msg) -> bool:
    """Not ours (nothing to do), or a fan-out member's outcome (its parent's answer waits on it)."""
    p = flow.pending.get(held(flow, msg.subject) or "")
    return p is None or p.parent is not None


async def outcome_seen(flow: Flow, msg: Msg) -> None:
    rid = held(flow, msg.subject)
    if rid is None:
        return
    try:
        outcome = OUTCOME.decode(msg.data)
    except SchemaError:
        outcome = None
    await flow.finished(rid, outcome)


async def failure_seen(flow: Flow, msg: Msg) -> None:
    if held(flow, msg.subject) is None:
        return
    try:
        failure = ATTEMPT_FAILED.decode(msg.data)
    except SchemaError:
        log.warning("malformed failure on %s", msg.subject)
        return
    await flow.failed(failure)


class OutcomeFeed:
    def __init__(
        self, urgent: Callable[[Msg], bool], handle: Callable[[Msg], Awaitable[None]], *, delay: float
    ) -> None:
        self.urgent, self.handle = urgent, handle
        self._held: Linger[Msg] = Linger(delay, self._due)
        self._tasks: set[asyncio.Task[None]] = set()

    async def heard(self, msg: Msg) -> None:
        if self.urgent(msg):
            await self.handle(msg)
        else:
            self._held.add(msg)

    async def drain(self) -> None:
        self._held.flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _due(self, msgs: list[Msg]) -> None:
        task = asyncio.create_task(self._handle_all(msgs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_all(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                await self.handle(msg)
            except Exception:  # one outcome's trouble is not the next one's
                log.exception("handling the outcome on %s failed", msg.subject)
