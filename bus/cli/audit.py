"""``orchestra audit``: replay stored history for a time window and subject filter, as a timeline
or as JSON lines. Every stream keeps ``bus.streams.history`` of it."""

from __future__ import annotations

import argparse
import asyncio
import heapq
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import subjects
from bus.cli import render
from bus.cli.common import config_of, connect_cli, parse_when

Record = tuple[datetime, int, str, str, bytes]  # time, stream seq, stream, subject, data


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="replay stored history for a time window")
    p.add_argument("--since", default="1h", help="start: 30m, 2h, 7d, today, or ISO time (default 1h)")
    p.add_argument("--until", default="now", help="end (default now)")
    p.add_argument(
        "--subject",
        action="append",
        dest="filters",
        help="subject filter, repeatable (default: every stored subject)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--limit", type=int, default=0, help="at most this many records (the first ones)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_audit(args))


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
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subject,
    )
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    records: list[Record] = []
    try:
        remaining = (await psub.consumer_info()).num_pending or 0
        while remaining > 0:
            for msg in await psub.fetch(min(remaining, 256), timeout=5):
                meta = msg.metadata
                remaining = meta.num_pending or 0
                when = meta.timestamp or datetime.now(UTC)
                if when > until:
                    remaining = 0
                    break
                records.append((when, meta.sequence.stream, stream, msg.subject, msg.data))
    finally:
        await psub.unsubscribe()
    return records


async def _audit(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    since, until = parse_when(args.since), parse_when(args.until)
    filters = args.filters or [f for spec in subjects.STREAMS for f in spec.subjects]
    nc = await connect_cli(cfg)
    try:
        records = await replay(nc.jetstream(), filters, since, until)
    finally:
        await nc.close()
    if args.limit:
        records = records[: args.limit]
    for when, seq, _stream, subject, data in records:
        print(render.as_json(when, subject, data, seq) if args.json else render.line(when, subject, data))
    return 0
