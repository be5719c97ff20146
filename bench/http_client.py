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
import platform
import sys
import tempfile
from pathlib import Path

import aiohttp
import msgspec
import uvloop

from actors.cloud_proxy.clients.http1 import Pool
from bench.gateway import Proc, free_port, start, wait_log
from bench.record import save
from bench.sidebyside import Call, alternate, print_medians, timed

BODY = msgspec.json.encode(
    {"model": "fake", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}
)
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


async def main(args: argparse.Namespace) -> dict[str, object]:
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
                await timed(way, 300, 16)
            rows = await alternate(ways, count=args.count, rounds=args.rounds, concurrencies=(1, 16), unit="call")
            await session.close()
            await pool.close()
        finally:
            for p in procs:
                p.stop()
    print_medians(rows, unit="call")
    return {"machine": platform.platform(), "count": args.count, "rounds": args.rounds, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.install()
    save("http_client", asyncio.run(main(args)))
