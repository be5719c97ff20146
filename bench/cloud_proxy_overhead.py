"""What the cloud proxy adds to a call: the same chat completion sent straight to a fast
OpenAI-compatible backend, and sent as a Dispatch through NATS to ``python -m actors.cloud_proxy``
(result read back from ``orch.result.<id>``). Prints p50/p90 latency at concurrency 1 and throughput
at concurrency 64.

    .venv/bin/python -m bench.cloud_proxy_overhead [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
from aiohttp import web
from nats.aio.msg import Msg

from bus import subjects
from bus.server import EmbeddedNats
from schemas.codec import OUTCOME, encode
from schemas.dispatch import Dispatch, Target
from schemas.request import ChatMessage, Sampling, make_request
from tests.support.cloud import cloud_profile
from tests.support.procs import ActorProcess

ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


async def backend() -> tuple[web.AppRunner, str]:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def run(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cloud-"))
    server = EmbeddedNats(store_dir=tmp / "nats", port=0)
    server.start()
    runner, url = await backend()
    providers = {"fast": {"api": "openai", "tier": "together", "base_url": url, "api_key": {"env": "BENCH_KEY"}}}
    price = {"input": 1, "output": 1}
    models = {"fast-model": {"provider": "fast", "remote_name": "m", "family": "bench", "price": price}}
    profile = cloud_profile(tmp / "profile", server.url, providers, models, log_level="INFO")
    proc = ActorProcess("actors.cloud_proxy", profile, env={"BENCH_KEY": "sk-bench"}).start()
    proc.wait_log("cloud_proxy started", timeout=30)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    try:
        async with aiohttp.ClientSession() as session:

            async def direct() -> float:
                t = time.perf_counter()
                auth = {"Authorization": "Bearer x"}
                async with session.post(f"{url}/chat/completions", json=body, headers=auth) as r:
                    await r.read()
                return time.perf_counter() - t

            async def proxied() -> float:
                req = make_request(messages=[ChatMessage(role="user", content="Hi")], sampling=Sampling(max_tokens=8))
                target = Target(tier="together", model="fast-model", provider="fast")
                d = Dispatch(request=req, target=target, dispatched_at=time.time())
                fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

                async def on_result(msg: Msg) -> None:
                    if not fut.done():
                        fut.set_result(msg.data)

                sub = await nc.subscribe(subjects.result(req.id), cb=on_result)
                t = time.perf_counter()
                await js.publish(subjects.dispatch_cloud("fast", "fast-model"), encode(d),
                                 headers={"Nats-Msg-Id": f"{req.id}:0"})  # fmt: skip
                OUTCOME.decode(await asyncio.wait_for(fut, 30))
                elapsed = time.perf_counter() - t
                await sub.unsubscribe()
                return elapsed

            for _ in range(100):  # warm-up: connections, the proxy's consumer
                await proxied()
                await direct()
            rows = []
            for name, fn in (("direct HTTP", direct), ("via cloud_proxy", proxied)):
                lat = [await fn() for _ in range(n // 4)]
                sem = asyncio.Semaphore(64)

                async def one(fn=fn, sem=sem) -> None:  # type: ignore[no-untyped-def]
                    async with sem:
                        await fn()

                t = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(n)))
                rps = n / (time.perf_counter() - t)
                rows.append((name, statistics.median(lat) * 1e3, pct(lat, 0.9) * 1e3, rps))
        print(f"{'path':<18}{'p50 ms':>9}{'p90 ms':>9}{'req/s @64':>12}")
        for name, p50, p90, rps in rows:
            print(f"{name:<18}{p50:>9.2f}{p90:>9.2f}{rps:>12.0f}")
        print(f"added at p50: {rows[1][1] - rows[0][1]:.2f} ms")
    finally:
        await nc.close()
        proc.stop()
        await runner.cleanup()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(run(parser.parse_args().requests))


if __name__ == "__main__":
    main()
