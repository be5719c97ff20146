"""``orchestra audit``: replay stored history for a time window and subject filter, as a timeline
or as JSON lines. Every stream keeps ``bus.streams.history`` of it."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bus import render, subjects
from bus.replay import replay
from cli.common import config_of, connect_cli, parse_when


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
