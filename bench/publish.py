"""What storing one message in JetStream costs the publishing process: nats-py's ``js.publish`` against
the actors' own :class:`bus.publish.Publisher`, side by side on one nats-server.

    .venv/bin/python -m bench.publish [--count 3000] [--rounds 3]

Each round stores ``count`` messages (~1 KB, with a Nats-Msg-Id, as a request is stored) one at a time
(c=1: a request's hops) and ``count`` with 64 in flight (c=64), with each way alternating first. Reported:
the publishing process's CPU time per stored message (user + system, µs; the nats-server's is not in it)
and the round trip's p50 at c=1. The two ways store the same messages and raise the same errors
(tests/integration/test_publisher.py). Writes bench/results/publish-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import uuid
from pathlib import Path

import nats
import uvloop
from nats.js.api import StreamConfig

from bench.record import save
from bench.sidebyside import Call, alternate, print_medians, timed
from bus.publish import Publisher, Stores
from bus.server import EmbeddedNats

BODY = b'{"id":"x","messages":[{"role":"user","content":"' + b"a" * 900 + b'"}]}'


def storing(js: Stores, subject: str) -> Call:
    """One stored message (~1 KB, a fresh Nats-Msg-Id), as a request is stored."""

    async def store() -> object:
        return await js.publish(subject, BODY, timeout=5.0, headers={"Nats-Msg-Id": uuid.uuid4().hex})

    return store


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp, EmbeddedNats(store_dir=Path(tmp), port=0) as srv:
        nc = await nats.connect(srv.url)
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], max_msgs=100_000))
        stores: dict[str, Stores] = {"nats-py js.publish": js, "Publisher": Publisher(nc)}
        for way in stores.values():  # warm-up
            await timed(storing(way, "bench.warm"), 300, 1)
        ways = {name: storing(way, "bench.measured") for name, way in stores.items()}
        rows = await alternate(ways, count=args.count, rounds=args.rounds, concurrencies=(1, 64), unit="msg")
        await nc.close()
    print_medians(rows, unit="msg")
    return {"machine": platform.platform(), "count": args.count, "rounds": args.rounds, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.install()
    save("publish", asyncio.run(main(args)))
