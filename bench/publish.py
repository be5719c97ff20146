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
import json
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats
import uvloop
from nats.js.api import StreamConfig

from bus.publish import Publisher, Stores
from bus.server import EmbeddedNats

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
BODY = b'{"id":"x","messages":[{"role":"user","content":"' + b"a" * 900 + b'"}]}'


async def run_way(js: Stores, subject: str, count: int, concurrency: int) -> tuple[float, float]:
    """CPU µs per message and p50 ms of the round trips."""
    latencies: list[float] = []

    async def one() -> None:
        t = time.perf_counter()
        await js.publish(subject, BODY, timeout=5.0, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        latencies.append(time.perf_counter() - t)

    cpu = time.process_time()
    if concurrency == 1:
        for _ in range(count):
            await one()
    else:
        sem = asyncio.Semaphore(concurrency)

        async def gated() -> None:
            async with sem:
                await one()

        await asyncio.gather(*(gated() for _ in range(count)))
    used = time.process_time() - cpu
    return used * 1e6 / count, statistics.median(latencies) * 1000


async def main(args: argparse.Namespace) -> dict[str, object]:
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp, EmbeddedNats(store_dir=Path(tmp), port=0) as srv:
        nc = await nats.connect(srv.url)
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], max_msgs=100_000))
        ways: dict[str, Stores] = {"nats-py js.publish": js, "Publisher": Publisher(nc)}
        for way in ways.values():  # warm-up
            await run_way(way, "bench.warm", 300, 1)
        for rnd in range(args.rounds):
            for concurrency in (1, 64):
                order = list(ways.items()) if rnd % 2 == 0 else list(reversed(ways.items()))
                for name, way in order:
                    cpu_us, p50 = await run_way(way, f"bench.{concurrency}", args.count, concurrency)
                    cell = rows.setdefault(f"{name} c={concurrency}", {"cpu_us": [], "p50_ms": []})
                    cell["cpu_us"].append(cpu_us)
                    cell["p50_ms"].append(p50)
                    print(f"round {rnd + 1} {name:20} c={concurrency:<3} {cpu_us:7.1f} µs CPU/msg  p50 {p50:6.3f} ms")
        await nc.close()
    print(f"\n{'way':28} {'CPU µs/msg (median)':>20} {'p50 ms':>8}")
    for key, cell in rows.items():
        print(f"{key:28} {statistics.median(cell['cpu_us']):20.1f} {statistics.median(cell['p50_ms']):8.3f}")
    return {"machine": platform.platform(), "count": args.count, "rounds": args.rounds, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.install()
    out = asyncio.run(main(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"publish-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
