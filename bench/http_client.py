"""What one provider call's HTTP costs the cloud_proxy: aiohttp's ClientSession (the transport before)
against the lean keep-alive client (actors/cloud_proxy/clients/http1.py), side by side on one backend.

    .venv/bin/python -m bench.http_client [--count 3000] [--rounds 3]

The fake OpenAI backend (bench/fake_openai.py, 0 ms) answers a chat completion; each way POSTs the same
JSON body with the same headers, reads the answer and decodes its JSON, within a total and an idle
timeout, as ``HttpClient.complete`` does: aiohttp configured as the old transport was (one session, a
TCPConnector of 64 with keep-alive, a ClientTimeout per call), the lean pool inside ``asyncio.timeout``.
Each round runs ``count`` calls one at a time (c=1) and ``count`` with 16 in flight (c=16), each way
first in every other round. Reported: this process's CPU time per call (user + system, µs; the
backend's is not in it) and the p50 round trip. Writes bench/results/http_client-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec
import uvloop

from actors.cloud_proxy.clients.http1 import Pool
from bench.gateway import Proc, free_port, start, wait_log

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
BODY = msgspec.json.encode(
    {"model": "fake", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}
)
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
Call = Callable[[], Awaitable[object]]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_way(call: Call, count: int, concurrency: int) -> tuple[float, float]:
    """CPU µs per call and p50 ms."""
    latencies: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - t0) * 1000)

    c0 = cpu_s()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    done = len(latencies)
    return (cpu_s() - c0) / done * 1e6, statistics.median(latencies)


async def main(args: argparse.Namespace) -> dict[str, object]:
    rows: dict[str, dict[str, list[float]]] = {}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        port = free_port()
        argv = [sys.executable, "bench/fake_openai.py", "--port", str(port), "--delay-ms", "0"]
        backend = start("fake", argv, Path(tmp))
        procs.append(backend)
        try:
            wait_log(backend, "listening on")
            base = f"http://127.0.0.1:{port}"
            url = f"{base}/v1/chat/completions"
            connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300, keepalive_timeout=60)
            session = aiohttp.ClientSession(connector=connector, trust_env=False)
            pool = Pool(base, connect_timeout=5.0, keepalive=60.0)

            async def via_aiohttp() -> object:
                timeout = aiohttp.ClientTimeout(total=30.0, connect=5.0, sock_read=30.0)
                async with session.post(url, data=BODY, headers=dict(HEADERS), timeout=timeout) as resp:
                    return msgspec.json.decode(await resp.read())

            async def via_pool() -> object:
                async with asyncio.timeout(30.0):
                    async with await pool.request("POST", url, dict(HEADERS), BODY, idle=30.0) as resp:
                        return msgspec.json.decode(await resp.read())

            ways: dict[str, Call] = {"aiohttp ClientSession": via_aiohttp, "http1 Pool": via_pool}
            for way in ways.values():  # warm-up: connections open, code paths hot
                await run_way(way, 300, 16)
            for rnd in range(args.rounds):
                for concurrency in (1, 16):
                    order = list(ways.items()) if rnd % 2 == 0 else list(reversed(ways.items()))
                    for name, way in order:
                        cpu_us, p50 = await run_way(way, args.count, concurrency)
                        cell = rows.setdefault(f"{name} c={concurrency}", {"cpu_us": [], "p50_ms": []})
                        cell["cpu_us"].append(cpu_us)
                        cell["p50_ms"].append(p50)
                        line = f"{cpu_us:7.1f} µs CPU/call  p50 {p50:6.3f} ms"
                        print(f"round {rnd + 1} {name:22} c={concurrency:<3} {line}")
            await session.close()
            await pool.close()
        finally:
            for p in procs:
                p.stop()
    print(f"\n{'way':30} {'CPU µs/call (median)':>21} {'p50 ms':>8}")
    for key, cell in rows.items():
        print(f"{key:30} {statistics.median(cell['cpu_us']):21.1f} {statistics.median(cell['p50_ms']):8.3f}")
    return {"machine": platform.platform(), "count": args.count, "rounds": args.rounds, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.install()
    out = asyncio.run(main(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"http_client-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
