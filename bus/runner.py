"""``python -m actors.<name>``: load the shared config, set up logging, install uvloop, connect,
run the actor until SIGTERM / SIGINT, stop it gracefully, drain the connection, exit 0.

A second signal during shutdown exits at once (status 1). A config error exits 2 with the problems,
one per line; a start-up failure exits 1 with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys

import uvloop
from nats.aio.client import Client as NATS

from bus.actor import Actor
from bus.connect import connect
from bus.errors import BusError
from bus.log import setup_logging
from schemas.config import ConfigError, load_config

log = logging.getLogger(__name__)

# Young collections every this many allocations (Python's default: 700). $ORCHESTRA_GC_THRESHOLD
# overrides it; 0 keeps Python's defaults.
GC_THRESHOLD = 20_000


def tune_gc() -> None:
    """Once the actor has started: what lives as long as the process (modules, config, the actor's own
    state) is frozen out of the collector's scans, and young collections run every GC_THRESHOLD
    allocations. An actor makes many short-lived objects per message, nearly all freed by reference
    counting, and with Python's defaults the cyclic collector was a visible share of its CPU
    (bench/gateway at concurrency 64: +9% requests/s with the 0 ms backend, +4% with the 50 ms one)."""
    raw = os.environ.get("ORCHESTRA_GC_THRESHOLD", "").strip()
    if raw and not raw.isdigit():
        log.warning("ORCHESTRA_GC_THRESHOLD=%r is not a whole number: using %d", raw, GC_THRESHOLD)
    threshold = int(raw) if raw.isdigit() else GC_THRESHOLD
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 10)


def parse_args(actor_cls: type[Actor], argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m actors.{actor_cls.name}", description=actor_cls.__doc__)
    parser.add_argument("--config", help="profile directory or file (default: $ORCHESTRA_CONFIG or configs/local)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    actor_cls.add_arguments(parser)
    return parser.parse_args(argv)


def main(actor_cls: type[Actor], argv: list[str] | None = None) -> None:
    args = parse_args(actor_cls, argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        sys.exit(2)
    setup_logging(args.log_level or cfg.log_level)
    sys.exit(uvloop.run(serve(actor_cls, cfg, args)))


async def serve(actor_cls: type[Actor], cfg: object, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        actor = actor_cls.from_args(cfg, args)  # type: ignore[arg-type]
    except (ValueError, BusError) as exc:
        log.error("%s: %s", actor_cls.name, exc)
        return 1

    async def reconnected() -> None:
        actor.on_reconnect()

    async def disconnected() -> None:
        actor.on_disconnect()

    connecting = asyncio.ensure_future(
        connect(
            actor.cfg.bus,
            name=f"{actor.name}:{actor.instance}",
            role=actor.role or actor.name,
            data_dir=actor.cfg.data_dir,
            on_reconnect=reconnected,
            on_disconnect=disconnected,
        )
    )
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([connecting, stopper], return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        return 0
    nc = connecting.result()
    # A standby (a singleton waiting for its writer lease) stays in start() until it takes over: a
    # signal meanwhile stops it like any other.
    starting = asyncio.ensure_future(actor.start(nc))
    await asyncio.wait([starting, stopper], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        with contextlib.suppress(Exception):
            await nc.close()
        return 0
    stopper.cancel()
    try:
        starting.result()
    except Exception as exc:
        log.error("%s failed to start: %s", actor.name, exc, exc_info=not isinstance(exc, BusError))
        await nc.close()
        return 1
    tune_gc()
    return await _run_until_stopped(actor, nc, stop)


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM / SIGINT set ``stop``; a second signal exits at once."""
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def _run_until_stopped(actor: Actor, nc: NATS, stop: asyncio.Event) -> int:
    """A started actor runs until a signal or its own exit request; then it stops and the connection drains."""
    stopper = asyncio.ensure_future(stop.wait())
    exiting = asyncio.ensure_future(actor.exit_requested.wait())
    await asyncio.wait([stopper, exiting], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    exiting.cancel()
    if actor.exit_requested.is_set():
        log.error("%s stops: %s", actor.name, actor.exit_reason)
    await actor.stop()
    # drain() can hang while pull subscriptions are open; those are closed by now, and it is bounded.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), 2.0)
    with contextlib.suppress(Exception):
        await nc.close()
    return 1 if actor.exit_requested.is_set() else 0
