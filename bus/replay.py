"""The one stream reader: stored messages read back in order, for rebuilds (the budget ledger), history
(``orchestra audit``, the dashboard's warm-up, the monitor's feed, benches) and reports.

    async for batch in read_batches(nc, stream, subject, after_seq=n):   # by stream sequence
    async for batch in read_batches(nc, stream, subject, since=when):    # by store time
    records = await replay(js, filters, since, until)   # every stream a filter touches, merged in time order

An ephemeral consumer without acks, pulled in large batches straight into a callback: a restart reads a
month of ledger at the speed of decoding, not of one round trip per message. Live work is never read
this way: workers take it through bus/consumer.py's pull loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import subjects

Record = tuple[datetime, int, str, str, bytes]  # time, stream seq, stream, subject, data

BATCH = 10_000
PULL_EXPIRES = 10.0


def _window(subject: str, after_seq: int, since: datetime | None) -> ConsumerConfig:
    if since is not None:
        policy, start_seq = DeliverPolicy.BY_START_TIME, None
    elif after_seq:
        policy, start_seq = DeliverPolicy.BY_START_SEQUENCE, after_seq + 1
    else:
        policy, start_seq = DeliverPolicy.ALL, None
    return ConsumerConfig(
        deliver_policy=policy,
        opt_start_seq=start_seq,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subject,
        max_waiting=1,
    )


class _Batch:
    """One pull's messages, as the server hands them to the inbox callback."""

    def __init__(self) -> None:
        self.received: list[Msg] = []
        self.done = asyncio.Event()
        self.wanted = 0

    def start(self, wanted: int) -> None:
        self.wanted = wanted
        self.received = []
        self.done.clear()

    async def on_msg(self, msg: Msg) -> None:
        if msg.headers and "Status" in msg.headers and not msg.reply:
            if msg.headers["Status"] != "100":  # 404 / 408: nothing more for this pull
                self.done.set()
            return
        self.received.append(msg)
        if len(self.received) >= self.wanted:
            self.done.set()


async def read_batches(
    nc: NATS,
    stream: str,
    subject: str,
    *,
    after_seq: int = 0,
    since: datetime | None = None,
    batch: int = BATCH,
) -> AsyncGenerator[list[Msg], None]:
    """The stored messages of ``stream`` matching ``subject`` after stream sequence ``after_seq`` (or
    stored from ``since`` on), in order, a pull's worth at a time. Raises NotFoundError without the
    stream. Close it (``contextlib.aclosing``) when stopping early: its consumer goes at once."""
    js = nc.jetstream()
    consumer = await js.add_consumer(stream, _window(subject, after_seq, since))
    pull = _Batch()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=pull.on_msg)
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer.name}"
    remaining = consumer.num_pending or 0
    try:
        while remaining > 0:
            pull.start(min(remaining, batch))
            request = {"batch": pull.wanted, "expires": int(PULL_EXPIRES * 1e9)}
            await nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
            await asyncio.wait_for(pull.done.wait(), PULL_EXPIRES + 5)
            chunk = pull.received
            yield chunk
            remaining -= len(chunk)
            if len(chunk) < pull.wanted:  # messages aged out meanwhile: ask the server what is left
                remaining = (await js.consumer_info(stream, consumer.name)).num_pending or 0
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, consumer.name)


async def replay(js: JetStreamContext, filters: list[str], since: datetime, until: datetime) -> list[Record]:
    """Every stored message matching the filters in [since, until], ordered by time."""
    per_stream: list[list[Record]] = []
    for spec in subjects.STREAMS:
        for f in filters:
            if any(subjects.subjects_overlap(f, s) for s in spec.subjects):
                per_stream.append(await _read(js, spec.name, f, since, until))
    merged = list(heapq.merge(*per_stream, key=lambda r: (r[0], r[2], r[1])))
    seen: set[tuple[str, int]] = set()
    out = []
    for rec in merged:  # two overlapping filters on one stream must not show a message twice
        if (rec[2], rec[1]) not in seen:
            seen.add((rec[2], rec[1]))
            out.append(rec)
    return out


async def _read(js: JetStreamContext, stream: str, subject: str, since: datetime, until: datetime) -> list[Record]:
    records: list[Record] = []
    nc: NATS = js._nc  # the connection this context publishes on (nats-py keeps it there)
    async with contextlib.aclosing(read_batches(nc, stream, subject, since=since, batch=256)) as batches:
        async for chunk in batches:
            for msg in chunk:
                meta = msg.metadata
                when = meta.timestamp or datetime.now(UTC)
                if when > until:
                    return records
                records.append((when, meta.sequence.stream, stream, msg.subject, msg.data))
    return records
