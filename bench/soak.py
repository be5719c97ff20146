"""Memory over a long run: the whole embedded stack (every actor of the Procfile, authentication and
permissions on, budgets on) in front of a fake OpenAI-compatible backend, driven with N requests, and
the RSS of every actor process at the start, after warm-up, at checkpoints and at the end.

    .venv/bin/python -m bench.soak [--requests 200000] [--concurrency 64] [--warmup 20000] [--cache]

Every 10th request names one of 100 tasks (``orchestra.task``), so the monitor's per-task answer samples
and embeddings are exercised too; the backend echoes each request (``--echo``), so every answer is a text of
its own (with one fixed answer the monitor would embed it once and remember it). The cache is off unless
``--cache`` (each request is then routed and paid: the budget path is on the hot path). Prints a table and
writes bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from nats.aio.client import Client as NATS

from bench.gateway import Proc, free_port, orchestra_profile, start, start_backends, wait_http, wait_log
from bench.record import RESULTS
from bus import subjects
from bus.server import EmbeddedNats
from bus.service import call
from cli.common import connect_cli
from schemas.budget import LEDGER_SUMMARY, SummaryRequest
from schemas.config import load_config
from tests.support.profile import register_server

ACTORS: tuple[tuple[str, list[str]], ...] = (
    ("budget_guard", []),
    ("cloud_proxy", []),
    ("router", []),
    ("gpu_host", ["--host", "cpu0"]),
    ("cache", []),
    ("diversity_monitor", []),
    ("rotator", []),
    ("gateway", []),
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body(i: int) -> bytes:
    doc: dict[str, Any] = {"model": "bench/fast", "messages": [{"role": "user", "content": f"Say something {i}."}]}
    if i % 10 == 0:
        doc["orchestra"] = {"task": f"task-{i % 1000 // 10}"}
    return json.dumps(doc).encode()


async def drive(url: str, headers: dict[str, str], first: int, n: int, concurrency: int) -> tuple[int, float]:
    """Send requests ``first .. first + n`` with ``concurrency`` clients; (errors, seconds)."""
    errors = 0
    nxt = first
    end = first + n
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def client() -> None:
            nonlocal errors, nxt
            while nxt < end:
                i, nxt = nxt, nxt + 1
                try:
                    async with http.post(url, data=body(i)) as r:
                        await r.read()
                        errors += r.status != 200
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return errors, time.perf_counter() - started


async def ledger_of(nc: NATS) -> dict[str, int]:
    """What the budget_guard holds now: charges, open reservations and leases (its summary)."""
    s = await call(nc, subjects.SVC_BUDGET_SUMMARY, SummaryRequest(), LEDGER_SUMMARY, timeout=10.0)
    return {"charges": s.charges, "open_reservations": s.open_reservations, "open_leases": s.open_leases}


async def lag_of(nc: NATS) -> dict[str, int]:
    """Messages each RESULTS consumer has yet to take or to settle: a consumer that falls behind the
    traffic has its backlog here (and its RSS figures are not those of a steady state)."""
    infos = await nc.jetstream().consumers_info(subjects.RESULTS_STREAM)
    return {str(i.name): int(i.num_pending or 0) + int(i.num_ack_pending or 0) for i in infos}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    procs: list[Proc] = []
    closing: list[NATS] = []
    nats = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=tmp / "auth")
    try:
        nats.start()
        register_server(nats)
        fast, slow = start_backends(tmp, procs, echo=True)  # answers differ, as real ones do
        gw_port = free_port()
        py = sys.executable
        profile = orchestra_profile(tmp, nats.url, fast, slow, gw_port, cache=args.cache)
        key = "orch-" + secrets.token_hex(16)
        (tmp / "data").mkdir(exist_ok=True)
        (tmp / "data" / "keys.txt").write_text(f"bench:{key}\n")
        env = {"BENCH_BACKEND_KEY": "sk-fake", "ORCHESTRA_CONFIG": str(profile)}
        actors: dict[str, Proc] = {}
        for actor, extra in ACTORS:
            launch = ["-m", "bench.memtrace", str(args.trace_dir / actor)] if actor in args.trace else ["-m"]
            p = start(actor, [py, *launch, f"actors.{actor}", "--config", str(profile), *extra], tmp, env)
            procs.append(p)
            wait_log(p, f"{actor} started", timeout=180)
            actors[actor] = p
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}"}
        await wait_http(f"http://127.0.0.1:{gw_port}/healthz", {})
        cli = await connect_cli(load_config(profile))  # the bench's own look at the ledger and the consumers
        closing.append(cli)

        async def sample(
            label: str, done: int, seconds: float = 0.0, errors: int = 0, n_new: int = 0
        ) -> dict[str, Any]:
            row: dict[str, Any] = {
                "at": label,
                "requests": done,
                "rss_mb": {n: round(rss_mb(p.popen.pid), 1) for n, p in actors.items()},
                "cpu_s": {n: round(cpu_s(p.popen.pid), 2) for n, p in actors.items()},
                "seconds": round(seconds, 1),
                "errors": errors,
                "ledger": await ledger_of(cli),
                "results_lag": await lag_of(cli),
            }
            rss = "  ".join(f"{n} {v:.0f}" for n, v in row["rss_mb"].items())
            rate = f"  ({n_new / seconds:.0f} req/s, {errors} errors)" if seconds else ""
            lag = " ".join(f"{n} {v}" for n, v in row["results_lag"].items())
            print(
                f"{label:>8} {done:>7} req  RSS MB: {rss}{rate}  ledger {row['ledger']}  RESULTS lag: {lag}",
                file=sys.stderr,
                flush=True,
            )
            partial.append(row)
            args.out.write_text(json.dumps({"partial": True, "rows": partial}, indent=2))  # kept if stopped early
            return row

        partial: list[dict[str, Any]] = []
        rows = [await sample("start", 0)]
        done, errors_total = 0, 0
        steps = [args.warmup] + [args.step] * ((args.requests - args.warmup) // args.step)
        if sum(steps) < args.requests:
            steps.append(args.requests - sum(steps))
        for k, n in enumerate(steps):
            errors, seconds = await drive(url, headers, done, n, args.concurrency)
            done += n
            errors_total += errors
            label = "warm-up" if k == 0 else ("end" if done >= args.requests else "check")
            rows.append(await sample(label, done, seconds, errors, n))
        # the last look once every RESULTS consumer has caught up (or after --settle seconds)
        drained, deadline = time.monotonic(), time.monotonic() + args.settle
        while any((await lag_of(cli)).values()) and time.monotonic() < deadline:  # noqa: ASYNC110 (the server's state)
            await asyncio.sleep(0.5)
        rows.append(await sample("settled", done, seconds=0.0))
        rows[-1]["drain_s"] = round(time.monotonic() - drained, 1)
        print(f"the RESULTS consumers took {rows[-1]['drain_s']} s to catch up after the last request", file=sys.stderr)
        return summarise(rows, args, errors_total)
    finally:
        for cli in closing:
            await cli.close()
        for p in reversed(procs):
            p.stop()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace, errors: int) -> dict[str, Any]:
    warm, last = rows[1]["rss_mb"], rows[-1]["rss_mb"]
    assert isinstance(warm, dict) and isinstance(last, dict)
    growth = {n: round((last[n] - warm[n]) / warm[n] * 100, 1) for n in warm}
    seconds = sum(float(r["seconds"]) for r in rows)
    print(f"\n{'actor':<18} {'start MB':>9} {'warm MB':>9} {'end MB':>9} {'after warm-up':>14}")
    for n in warm:
        start_mb = rows[0]["rss_mb"][n]
        print(f"{n:<18} {start_mb:>9.1f} {warm[n]:>9.1f} {last[n]:>9.1f} {growth[n]:>13.1f}%")
    print(f"{args.requests} requests in {seconds:.0f} s ({args.requests / seconds:.0f} req/s), {errors} errors")
    behind = {n: v for n, v in rows[-1].get("results_lag", {}).items() if v}
    if behind:
        print(f"still behind after --settle {args.settle:.0f} s: {behind} (their RSS is not a steady state's)")
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "requests": args.requests,
        "concurrency": args.concurrency,
        "cache": args.cache,
        "errors": errors,
        "seconds": seconds,
        "rows": rows,
        "growth_after_warmup_pct": growth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--step", type=int, default=20_000, help="requests between RSS checkpoints")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="at most this many seconds for the consumers to catch up at the end"
    )
    parser.add_argument("--cache", action="store_true", help="the cache on (default: off, every request routed)")
    parser.add_argument("--trace", action="append", default=[], help="run ACTOR under bench/memtrace.py")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    args.trace_dir = RESULTS / f"memtrace-{time.strftime('%Y%m%d-%H%M%S')}"
    result = uvloop.run(run(args))
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
