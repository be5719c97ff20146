"""``orchestra watch``: follow the bus live (events by default), one line per message."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from bus import render, subjects
from cli.common import config_of, connect_cli


def register(sub: Any) -> None:
    p = sub.add_parser("watch", help="follow events (and more) live")
    p.add_argument("subjects", nargs="*", help=f"subject filters (default: {subjects.EVENT_ALL})")
    p.add_argument("--all", action="store_true", help="also requests, dispatches, results and commands")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a timeline")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_watch(args))


async def _watch(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    filters = list(args.subjects) or [subjects.EVENT_ALL]
    if args.all:
        filters += [subjects.REQUEST_ALL, subjects.DISPATCH_ALL, subjects.RESULT_ALL, subjects.COMMAND_ALL]
    nc = await connect_cli(cfg)
    done = asyncio.Event()
    seen = 0

    async def on_msg(msg: Any) -> None:
        nonlocal seen
        now = datetime.now(UTC)
        text = render.as_json(now, msg.subject, msg.data) if args.json else render.line(now, msg.subject, msg.data)
        print(text, flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    for f in dict.fromkeys(filters):
        await nc.subscribe(f, cb=on_msg)
    await nc.flush()  # the server has our subscriptions before we say we are watching
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    print(f"watching {', '.join(dict.fromkeys(filters))} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    await done.wait()
    await nc.close()
    return 0
