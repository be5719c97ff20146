"""``orchestra nats-server``: run the embedded nats-server of the profile in the foreground
(the Procfile's first line). Stops cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bus.cli.common import config_of
from bus.errors import NatsServerError
from bus.server import EmbeddedNats

STOP_GRACE_S = 2.0


def register(sub: Any) -> None:
    p = sub.add_parser("nats-server", help="run the profile's embedded nats-server in the foreground")
    p.set_defaults(run=run)


def embedded_for(cfg: Any) -> EmbeddedNats:
    emb = cfg.bus.embedded
    store = Path(emb.store_dir)
    if not store.is_absolute():
        store = Path(cfg.data_dir) / store
    return EmbeddedNats(
        store_dir=store, host=emb.host, port=emb.port, max_payload=int(emb.max_payload), gomaxprocs=emb.gomaxprocs
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    if not cfg.bus.embedded.enabled:
        raise NatsServerError(f"profile {cfg.profile!r} uses an external NATS ({', '.join(cfg.bus.servers)})")
    server = embedded_for(cfg)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(
        f"nats-server ready on {server.url} (store {server.store_dir}, pid {server.pid})", file=sys.stderr, flush=True
    )
    while not stop.wait(1.0):
        if server.proc is None or server.proc.poll() is not None:
            print("nats-server exited:\n" + "\n".join(server.log_tail()), file=sys.stderr)
            return 1
    # `orchestra up` stops everything at once: give the actors a moment to publish their last events
    # and drain before the bus goes away (they stop within a second or two).
    time.sleep(STOP_GRACE_S)
    server.stop()
    print("nats-server stopped", file=sys.stderr, flush=True)
    return 0
