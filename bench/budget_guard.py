"""The budget_guard's hot path and its restart, measured against a real nats-server and the guard as
a real process: ``.venv/bin/python -m bench.budget_guard [--reserves 4000] [--entries 100000]``.

    reserve latency   one request/reply round trip incl. the LEDGER append, p50 / p99, at 1 and 64 in flight
    settlement        results stored -> all charged (the RESULTS consumer caught up), per second
    rebuild           LEDGER entries read back and folded at start, per second
    rebuild, snapshot the same ledger from the latest snapshot + a short tail (``--tail`` entries after it)

Prints a table and writes the raw numbers to bench/results/budget_guard.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from actors.budget_guard import journal, rebuild
from bus.server import EmbeddedNats
from schemas.budget import Charged
from schemas.codec import encode
from schemas.config import load_config
from tests.support.budget import publish_result, reserve, result, settled, summary
from tests.support.procs import REPO, ActorProcess
from tests.support.profile import write_profile
from tests.support.wait import eventually


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def reserve_latency(nc: NATS, n: int, concurrency: int, tag: str) -> dict[str, float]:
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            reply = await reserve(nc, f"{tag}{i}", 0.001)
            lat.append((time.perf_counter() - t) * 1000)
            assert reply.granted, reply

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    return {"p50_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99), "per_s": n / wall}


async def settlement(nc: NATS, n: int) -> dict[str, float]:
    started = time.perf_counter()
    for start in range(0, n, 200):
        await asyncio.gather(
            *(publish_result(nc, result(f"set{i}", 0.0005)) for i in range(start, min(n, start + 200)))
        )
    await eventually(lambda: settled(nc), timeout=600, interval=0.01)
    return {"per_s": n / (time.perf_counter() - started)}


async def fill_ledger(nc: NATS, n: int, prefix: str = "fill") -> None:
    """Synthetic charges appended to LEDGER (as the guard writes them), pipelined."""
    js = nc.jetstream()
    now = time.time()
    batch = []
    for i in range(n):
        key = f"{prefix}{i}"
        c = Charged(at=now, key=key, outcome="result", request_id=key, tier="local", cost_nanos=1000)
        batch.append(js.publish(journal.subject_of(c), encode(c)))
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "nats", port=0)
        server.start()
        procs: list[ActorProcess] = []
        try:
            budgets = {"limits": [{"scope": "total", "period": "daily", "hard_usd": 1e6}], "reservation_ttl": 3600}
            streams = {"streams": {"max_bytes": "20GB"}}  # LEDGER's share holds a month of a lab's entries
            profile = write_profile(Path(tmp) / "profile", server.url, overrides={"budgets": budgets, "bus": streams})
            guard = ActorProcess("actors.budget_guard", profile).start()
            procs.append(guard)
            guard.wait_log("budget_guard started", timeout=60)
            nc = await nats.connect(server.url)
            out: dict[str, object] = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}"}
            await reserve_latency(nc, 200, 16, "warm")
            out["reserve_c1"] = await reserve_latency(nc, args.reserves // 4, 1, "c1-")
            out["reserve_c64"] = await reserve_latency(nc, args.reserves, 64, "c64-")
            out["settle"] = await settlement(nc, args.reserves)
            await fill_ledger(nc, args.entries)
            guard.terminate()
            guard = ActorProcess("actors.budget_guard", profile).start()
            procs.append(guard)
            guard.wait_log("budget_guard started", timeout=300)
            s = await summary(nc)
            out["rebuild"] = {
                "entries": s.entries_replayed,
                "ms": s.replay_ms,
                "per_s": s.entries_replayed / (s.replay_ms / 1000) if s.replay_ms else 0.0,
            }
            started = time.perf_counter()
            cfg = load_config(profile)
            manifest = await rebuild.snapshot_now(nc, cfg.budgets, now=time.time())
            assert manifest is not None
            out["snapshot_write"] = {"ms": (time.perf_counter() - started) * 1000, "bytes": manifest.bytes}
            await fill_ledger(nc, args.tail, prefix="tail")
            guard.terminate()
            guard = ActorProcess("actors.budget_guard", profile).start()
            procs.append(guard)
            guard.wait_log("budget_guard started", timeout=300)
            s2 = await summary(nc)
            assert s2.charges == s.charges + args.tail and s2.spent_nanos == s.spent_nanos + args.tail * 1000
            out["rebuild_snapshot"] = {"tail": s2.entries_replayed, "ms": s2.replay_ms, "charges": s2.charges}
            await nc.close()
            return out
        finally:
            for p in procs:
                p.stop()
            server.stop()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reserves", type=int, default=4000)
    parser.add_argument("--entries", type=int, default=100_000, help="synthetic LEDGER entries before the rebuild")
    parser.add_argument("--tail", type=int, default=10_000, help="entries stored after the snapshot")
    args = parser.parse_args()
    out = asyncio.run(main(args))
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "budget_guard.json").write_text(json.dumps(out, indent=2))
    c1, c64 = out["reserve_c1"], out["reserve_c64"]
    assert isinstance(c1, dict) and isinstance(c64, dict)
    print(f"machine: {out['machine']}")
    print(f"reserve, 1 in flight    p50 {c1['p50_ms']:.2f} ms  p99 {c1['p99_ms']:.2f} ms  {c1['per_s']:.0f}/s")
    print(f"reserve, 64 in flight   p50 {c64['p50_ms']:.2f} ms  p99 {c64['p99_ms']:.2f} ms  {c64['per_s']:.0f}/s")
    print(f"settlement              {out['settle']['per_s']:.0f} results/s")  # type: ignore[index]
    rb = out["rebuild"]
    assert isinstance(rb, dict)
    print(f"rebuild                 {rb['entries']} entries in {rb['ms']:.0f} ms = {rb['per_s']:.0f} entries/s")
    sw, rs = out["snapshot_write"], out["rebuild_snapshot"]
    assert isinstance(sw, dict) and isinstance(rs, dict)
    print(f"snapshot written        {sw['bytes']} bytes in {sw['ms']:.0f} ms")
    print(f"rebuild from snapshot   {rs['charges']} charges: snapshot + {rs['tail']} entries in {rs['ms']:.0f} ms")


if __name__ == "__main__":
    run()
