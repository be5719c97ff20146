"""Durable pull consumers, written once: continuous pulls, a concurrency limit, the ack policy.

A consumer keeps pull requests outstanding for as many messages as it has free slots, so a message is
handed to its handler the moment it is stored (no batch waits). For each message:

    handler returns                  -> ack (unless the handler called ``delivery.hold()``)
    raises Transient(delay)          -> nak with that delay (or a backoff); dead letter after max_deliver
    raises Permanent / SchemaError   -> dead letter + term
    raises anything else             -> logged once with its traceback, then as Transient
    runs longer than ack_wait / 3    -> ``in_progress`` heartbeats keep it ours
    is cancelled by shutdown         -> nak(0): another instance takes it at once
    consumer has ``linger`` > 0      -> polled for, in batches, every that many seconds (bus/linger.py)
    arrives after max_deliver tries  -> dead letter (a handler that crashed its process every time)

A dead letter is the original message copied to ``orch.dlq.<stream>`` with headers that say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import subjects
from bus.delivery import Delivery
from bus.errors import Permanent, Transient
from bus.linger import Poll
from schemas.errors import SchemaError
from schemas.events import DeadLettered, Event

log = logging.getLogger(__name__)

Handler = Callable[["Delivery"], Awaitable[None]]
DeadLetterHook = Callable[["Delivery", str], Awaitable[None]]

PULL_EXPIRES = 10.0  # seconds a pull request waits on the server
PULL_HEARTBEAT = 2.0  # the server says "still here" this often while a pull waits
OFF_PATH_LINGER = 0.02  # seconds between the polls of a consumer that folds results, while they come
OFF_PATH_CONCURRENCY = 256  # one slot per lingering message: <= 256 / (linger + handling) a second (32 fell behind)


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    subjects: tuple[str, ...]
    handler: Handler
    concurrency: int = 16
    ack_wait: float = 30.0
    max_deliver: int = 5
    nak_delay: float = 1.0
    max_ack_pending: int | None = None  # shared by all instances; default max(4 x concurrency, 1000)
    deliver_new: bool = False  # start at new messages instead of the whole stream
    on_dead_letter: DeadLetterHook | None = None  # e.g. answer the request with a typed error
    linger: float = 0.0  # > 0: off the request path, poll for messages in batches (bus/linger.py)
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


class PullConsumer:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        spec: ConsumerSpec,
        *,
        owner: str,
        emit: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        self.nc, self.js, self.spec, self.owner, self.emit = nc, js, spec, owner, emit
        self.inbox = nc.new_inbox()
        self._sub: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._outstanding = 0  # messages asked for and not yet received
        self._last_activity = time.monotonic()
        self._active: set[Delivery] = set()  # handed out and not settled (held included)
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll = Poll(spec.linger) if spec.linger > 0 else None  # None: a pull always outstanding
        self._fetching = False
        self._ensure_needed = False
        self._logged: set[int] = set()  # stream seqs whose traceback was logged already

    # --- lifecycle -------------------------------------------------------------------------------
    def consumer_config(self) -> ConsumerConfig:
        spec = self.spec
        filters = list(spec.subjects)
        return ConsumerConfig(
            durable_name=spec.durable,
            description=spec.description or None,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=float(spec.ack_wait),
            # one more than ours: on the extra delivery a never-settled message is dead-lettered (its handler crashed)
            max_deliver=spec.max_deliver + 1,
            max_ack_pending=spec.max_ack_pending or max(4 * spec.concurrency, 1000),
            deliver_policy=DeliverPolicy.NEW if spec.deliver_new else DeliverPolicy.ALL,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
            max_waiting=512,
            metadata=spec.metadata or None,
        )

    async def ensure(self) -> None:
        await self.js.add_consumer(self.spec.stream, self.consumer_config())
        self._ensure_needed = False

    async def start(self) -> None:
        await self.ensure()
        self._sub = await self.nc.subscribe(self.inbox, cb=self._on_msg)
        self._fetching = True
        self._loop_task = asyncio.create_task(self._pull_loop(), name=f"pull:{self.spec.durable}")
        self._tick_task = asyncio.create_task(self._progress_loop(), name=f"progress:{self.spec.durable}")

    def stop_fetching(self) -> None:
        self._fetching = False
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._active)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs (held deliveries do not count). True if idle in time."""
        tasks = [t for t in self._tasks if not t.done()]
        return not tasks or not (await asyncio.wait(tasks, timeout=timeout))[1]

    async def close(self) -> None:
        """Cancel what still runs (its messages are nak'ed), nak held ones, stop the pull loop."""
        self.stop_fetching()
        for handler_task in list(self._tasks):
            handler_task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for d in list(self._active):
            with contextlib.suppress(Exception):
                await d.nak()
        for loop_task in (self._loop_task, self._tick_task):
            if loop_task is not None:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loop_task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def reset(self) -> None:
        """After a reconnect: the server may have forgotten our pull requests."""
        self._outstanding = 0
        self._wake.set()

    # --- pulling ---------------------------------------------------------------------------------
    async def _pull_loop(self) -> None:
        refill, backoff, poll = max(1, self.spec.concurrency // 4), 0.5, self._poll
        while self._fetching:
            self._wake.clear()
            wait = PULL_HEARTBEAT
            try:
                if self._ensure_needed:
                    await self.ensure()
                free = self.spec.concurrency - len(self._active) - self._outstanding
                if poll is not None and free > 0 and not self._outstanding and self.nc.is_connected:
                    if (wait := poll.due_in(time.monotonic())) <= 0:
                        poll.sent(time.monotonic(), free)
                        await self._request(free, no_wait=True)
                        wait = PULL_HEARTBEAT
                elif poll is None and free > 0 and (self._outstanding == 0 or free >= refill) and self.nc.is_connected:
                    await self._request(free)
                backoff = 0.5
            except Exception as exc:  # the server is restarting, the consumer is being re-created
                log.debug("%s: pull on %s failed: %s", self.owner, self.spec.durable, exc)
                self._outstanding = 0
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._outstanding and time.monotonic() - self._last_activity > 3 * PULL_HEARTBEAT:
                self._outstanding = 0  # no heartbeat: our pull requests are gone (server restart)
                continue
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: no task per wait, as wait_for makes
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _request(self, batch: int, *, no_wait: bool = False) -> None:
        waits = {"expires": int(PULL_EXPIRES * 1e9), "idle_heartbeat": int(PULL_HEARTBEAT * 1e9)}
        body = {"batch": batch, **({"no_wait": True} if no_wait else waits)}
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.spec.stream}.{self.spec.durable}"
        self._outstanding += batch
        self._last_activity = time.monotonic()
        await self.nc.publish(subject, json.dumps(body).encode(), reply=self.inbox)

    async def _on_msg(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status") if not msg.reply else None
        if status is not None:
            self._on_status(status, headers)
            return
        self._outstanding = max(0, self._outstanding - 1)
        if not self._fetching:  # shutting down: let another instance have it now
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        if self._poll is not None:
            self._poll.received()
        delivery = Delivery(msg, self)
        self._active.add(delivery)
        task = asyncio.create_task(self._handle(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_status(self, status: str, headers: dict[str, str]) -> None:
        if status == "100":  # idle heartbeat
            return
        pending = headers.get("Nats-Pending-Messages")
        self._outstanding = max(0, self._outstanding - int(pending)) if pending and pending.isdigit() else 0
        description = str(headers.get("Description", ""))
        if status == "409" and "Deleted" in description:
            self._ensure_needed = True
        elif status not in ("404", "408", "409"):
            log.debug("%s: pull status %s %s on %s", self.owner, status, description, self.spec.durable)
        self._wake.set()

    def release(self, delivery: Delivery) -> None:
        self._active.discard(delivery)
        self._wake.set()

    # --- handling --------------------------------------------------------------------------------
    async def _handle(self, d: Delivery) -> None:
        spec = self.spec
        try:
            n = d.num_delivered
            if n > spec.max_deliver:
                await self.dead_letter(d, f"delivered {n} times without being settled (handler crashed or hung)")
                return
            await spec.handler(d)
            if not d.held and not d.settled:
                await d.ack()
        except asyncio.CancelledError:
            if not d.settled:
                with contextlib.suppress(Exception):
                    await asyncio.shield(d.nak())
            raise
        except (Permanent, SchemaError) as exc:
            await self.dead_letter(d, f"{type(exc).__name__}: {exc}")
        except Transient as exc:
            await self._retry_or_bury(d, str(exc), exc.delay)
        except Exception as exc:
            seq = d.stream_seq
            if seq not in self._logged:
                self._logged.add(seq)
                if len(self._logged) > 10_000:
                    self._logged.clear()
                log.exception("%s: handler failed on %s (delivery %d)", self.owner, d.subject, d.num_delivered)
            else:
                log.warning("%s: handler failed again on %s: %s", self.owner, d.subject, exc)
            await self._retry_or_bury(d, f"{type(exc).__name__}: {exc}", None)

    async def _retry_or_bury(self, d: Delivery, reason: str, delay: float | None) -> None:
        n = d.num_delivered
        if n >= self.spec.max_deliver:
            await self.dead_letter(d, f"gave up after {n} deliveries: {reason}")
            return
        await d.nak(delay if delay is not None else min(self.spec.nak_delay * 2 ** (n - 1), 60.0))

    async def dead_letter(self, d: Delivery, reason: str) -> None:
        spec = self.spec
        headers = {
            "Orch-Reason": reason[:1000],
            "Orch-Subject": d.subject,
            "Orch-Stream": spec.stream,
            "Orch-Consumer": spec.durable,
            "Orch-Deliveries": str(d.num_delivered),
            "Orch-Stream-Seq": str(d.stream_seq),
            "Nats-Msg-Id": f"dlq:{spec.stream}:{d.stream_seq}",
        }
        log.warning("%s: dead-lettered %s (stream seq %s): %s", self.owner, d.subject, d.stream_seq, reason)
        try:
            if spec.on_dead_letter is not None:
                await spec.on_dead_letter(d, reason)
            await self.js.publish(subjects.dead_letter(spec.stream), d.data, headers=headers)
        except Exception as exc:  # cannot store it now: leave it to redelivery
            log.warning("%s: could not dead-letter %s: %s", self.owner, d.subject, exc)
            await d.nak(self.spec.nak_delay)
            return
        await d.term()
        if self.emit is not None:
            await self.emit(
                DeadLettered(
                    stream=spec.stream,
                    subject=d.subject,
                    consumer=spec.durable,
                    deliveries=d.num_delivered,
                    reason=reason[:1000],
                )
            )

    async def _progress_loop(self) -> None:
        period = max(0.2, self.spec.ack_wait / 3)
        while True:
            await asyncio.sleep(period / 2)
            now = time.monotonic()
            for d in list(self._active):
                if not d.settled and now - d.last_progress >= period:
                    await d.in_progress()
