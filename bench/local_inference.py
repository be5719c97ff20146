"""Local inference through the gpu_host vs raw llama-cpp-python, on the same model, prompts and threads.

    .venv/bin/python -m bench.local_inference [--model gemma3-270m] [--threads 2] [--max-tokens 64] [--rounds 3]

It starts a nats-server and ``python -m actors.gpu_host`` (a real process, as in production), then, side by
side in each round:
  raw     llama_cpp.Llama.create_completion, one request after another (a Llama object cannot batch)
  host    N requests published on NATS at once -> N results (N = 1, 4, 8): continuous batching
  host-serial  the same N requests through the host one at a time
  llama.cpp batched  the N prompts decoded together by llama.cpp's low-level API without any scheduler:
          what this CPU's kernels give for N rows, the ceiling that batching can reach here
and the swap time: a SwapModels command (ModelSwap.swap_ms) vs a raw unload + ``Llama(...)`` load.
Prints a table of medians and writes every measurement to bench/results/local_inference-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors.gpu_host.engine import GenParams, LoadSpec
from actors.gpu_host.llama_engine import LlamaCppEngine
from bench.llama_batched import kernel_run
from bus import subjects
from bus.server import EmbeddedNats
from schemas.codec import EVENT, OUTCOME, encode
from schemas.commands import SwapModels
from schemas.config import load_config
from schemas.dispatch import Dispatch, Target
from schemas.events import ModelLoaded, ModelSwap
from schemas.request import Sampling, make_request
from schemas.result import GenerateResult
from tests.support.profile import write_profile
from weights.library import ModelLibrary

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a short story about a robot who learns to paint:",
    "In the middle of the night, the old lighthouse keeper",
    "The recipe for a good loaf of bread starts with",
    "Scientists have long wondered why the ocean",
    "My favourite memory from childhood is the summer when",
    "The city was quiet until the first train arrived and",
]
HOST = "cpu0"


def raw_run(path: Path, prompts: list[str], max_tokens: int, threads: int, context: int) -> dict[str, float]:
    """llama-cpp-python on its own: one Llama, the prompts one after another (greedy)."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens, started, per_request = 0, time.perf_counter(), []
    for p in prompts:
        t = time.perf_counter()
        out = llm.create_completion(p, max_tokens=max_tokens, temperature=0.0)
        assert isinstance(out, dict)
        per_request.append(time.perf_counter() - t)
        tokens += out["usage"]["completion_tokens"]
    wall = time.perf_counter() - started
    llm.close()
    return {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, "first_request_s": per_request[0]}


async def engine_run(
    path: Path, prompt: str, max_tokens: int, threads: int, context: int, batch: int
) -> dict[str, float]:
    """The gpu_host's own engine in this process, no NATS: what the orchestra itself adds is host - engine."""
    engine = LlamaCppEngine(
        LoadSpec(name="bench", path=path, context=context, batch=batch, n_threads=threads, n_threads_batch=threads)
    )
    await engine.start()
    try:
        t = time.perf_counter()
        done = await engine.submit(
            prompt, GenParams(max_tokens=max_tokens, temperature=0.0), deadline=time.time() + 600
        ).result()
        wall = time.perf_counter() - t
    finally:
        await engine.stop()
    return {"tokens": done.output_tokens, "wall_s": wall, "tok_s": done.output_tokens / wall}


def raw_load(path: Path, threads: int, context: int) -> float:
    from llama_cpp import Llama

    t = time.perf_counter()
    llm = Llama(str(path), n_ctx=context, n_threads=threads, verbose=False)
    elapsed = time.perf_counter() - t
    llm.close()
    return elapsed


async def host_run(nc: NATS, model: str, prompts: list[str], max_tokens: int, *, serial: bool) -> dict[str, float]:
    """Publish the prompts as dispatches (all at once, or one after another) and wait for every result."""
    js = nc.jetstream()
    reqs = [
        make_request(prompt=p, sampling=Sampling(max_tokens=max_tokens, temperature=0.0), timeout_s=600)
        for p in prompts
    ]
    done: dict[str, GenerateResult] = {}
    waiters: dict[str, asyncio.Future[None]] = {r.id: asyncio.get_running_loop().create_future() for r in reqs}

    async def on(msg: Msg) -> None:
        out = OUTCOME.decode(msg.data)
        if isinstance(out, GenerateResult) and out.request_id in waiters:
            done[out.request_id] = out
            if not waiters[out.request_id].done():
                waiters[out.request_id].set_result(None)

    sub = await nc.subscribe(subjects.RESULT_FINAL, cb=on)

    async def send(r: Any) -> None:
        d = Dispatch(request=r, target=Target(tier="local", model=model, host=HOST))
        await js.publish(subjects.dispatch_host(HOST, model), encode(d), headers={"Nats-Msg-Id": f"{r.id}:0"})

    started = time.perf_counter()
    if serial:
        for r in reqs:
            await send(r)
            await waiters[r.id]
    else:
        await asyncio.gather(*(send(r) for r in reqs))
        await asyncio.gather(*waiters.values())
    wall = time.perf_counter() - started
    await sub.unsubscribe()
    tokens = sum(r.usage.output_tokens for r in done.values())
    gen = statistics.mean(r.timings.generation_ms for r in done.values()) / 1000
    return {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, "mean_generation_s": gen}


async def host_swap(nc: NATS, unload: str, load: str) -> dict[str, float]:
    events: list[Any] = []
    swapped = asyncio.Event()

    async def on(msg: Msg) -> None:
        event = EVENT.decode(msg.data)
        events.append(event)
        if isinstance(event, ModelSwap):
            swapped.set()

    sub = await nc.subscribe("orch.event.model.>", cb=on)
    cmd = SwapModels(host=HOST, unload=[unload], load=[load], at=time.time(), by="bench")
    await nc.jetstream().publish(subjects.command(cmd), encode(cmd))
    await swapped.wait()
    await sub.unsubscribe()
    swap = next(e for e in events if isinstance(e, ModelSwap))
    loaded = next(e for e in events if isinstance(e, ModelLoaded))
    return {"swap_ms": swap.swap_ms, "load_ms": loaded.load_ms}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--swap-to", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-local-"))
    server = EmbeddedNats(store_dir=tmp / "nats", port=0)
    server.start()
    models = {name: {"keep_alive": "warm"} for name in ("smollm2-135m", "gemma3-270m")}
    models[args.model] = {"keep_alive": "hot"}
    threads = {"n_threads": args.threads, "n_threads_batch": args.threads}
    profile = write_profile(
        tmp / "profile", server.url, data_dir=REPO / ".data", overrides={"models": models, "hosts": {HOST: threads}}
    )
    log = (tmp / "gpu_host.log").open("wb")
    command = [sys.executable, "-m", "actors.gpu_host", "--config", str(profile), "--host", HOST]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        rows = asyncio.run(measure(args, server.url, profile, proc, tmp))
    finally:
        proc.terminate()
        proc.wait(20)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, rows)


async def measure(
    args: argparse.Namespace, url: str, profile: Path, proc: subprocess.Popen[bytes], tmp: Path
) -> dict[str, list[dict[str, float]]]:
    cfg = load_config(profile)
    lib = ModelLibrary(cfg, REPO / ".data")
    path, swap_path = lib.resolve(args.model).path, lib.resolve(args.swap_to).path
    context = cfg.local_models()[args.model].context_length
    nc = await nats.connect(url)
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        while True:  # the host is up with its hot model loaded
            try:
                kv = await nc.jetstream().key_value(subjects.KV_HOSTS)
                if args.model.encode() in ((await kv.get(HOST)).value or b""):
                    break
            except Exception:
                if proc.poll() is not None:
                    raise SystemExit(f"the gpu_host exited: see {tmp / 'gpu_host.log'}") from None
            await asyncio.sleep(0.2)
        await host_run(nc, args.model, PROMPTS[:2], 8, serial=False)  # warm-up
        for rnd in range(args.rounds):
            for n in args.concurrency:
                prompts = PROMPTS[:n]
                raw = await asyncio.to_thread(raw_run, path, prompts, args.max_tokens, args.threads, context)
                rows.setdefault(f"raw-{n}", []).append(raw)
                kernel = await asyncio.to_thread(kernel_run, path, prompts, args.max_tokens, args.threads, context)
                rows.setdefault(f"kernel-{n}", []).append(kernel)
                host = await host_run(nc, args.model, prompts, args.max_tokens, serial=False)
                rows.setdefault(f"host-{n}", []).append(host)
                if n == 1:
                    batch = cfg.local_models()[args.model].max_batch_size
                    engine = await engine_run(path, prompts[0], args.max_tokens, args.threads, context, batch)
                    rows.setdefault("engine-1", []).append(engine)
                if n > 1:
                    serial = await host_run(nc, args.model, prompts, args.max_tokens, serial=True)
                    rows.setdefault(f"host-serial-{n}", []).append(serial)
                print(
                    f"round {rnd + 1}: n={n} raw {raw['tok_s']:.1f} tok/s, llama.cpp batched {kernel['tok_s']:.1f}"
                    f" tok/s, host {host['tok_s']:.1f} tok/s",
                    flush=True,
                )
            rows.setdefault("swap", []).append(await host_swap(nc, args.model, args.swap_to))
            rows.setdefault("swap-back", []).append(await host_swap(nc, args.swap_to, args.model))
            raw_ms = 1000 * await asyncio.to_thread(raw_load, swap_path, args.threads, context)
            rows.setdefault("raw-load", []).append({"load_ms": raw_ms})
    finally:
        await nc.close()
    return rows


def report(args: argparse.Namespace, rows: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nmodel {args.model}, {args.threads} threads, max_tokens {args.max_tokens}, t=0, medians of {args.rounds}")
    head = (
        "requests",
        "raw llama-cpp-python (serial)",
        "llama.cpp batched",
        "gpu_host serial",
        "gpu_host concurrent",
        "x raw",
        "x llama.cpp batched",
    )
    print(" | ".join(f"{h:>{max(8, len(h))}}" for h in head))
    for n in args.concurrency:
        raw_tps, host_tps = median(rows[f"raw-{n}"], "tok_s"), median(rows[f"host-{n}"], "tok_s")
        kernel_tps = median(rows[f"kernel-{n}"], "tok_s")
        serial = f"{median(rows[f'host-serial-{n}'], 'tok_s'):.1f} tok/s" if n > 1 else "-"
        cells = (
            f"{n}",
            f"{raw_tps:.1f} tok/s",
            f"{kernel_tps:.1f} tok/s",
            serial,
            f"{host_tps:.1f} tok/s",
            f"{host_tps / raw_tps:.2f}x",
            f"{host_tps / kernel_tps:.2f}x",
        )
        print(" | ".join(f"{c:>{max(8, len(h))}}" for c, h in zip(cells, head, strict=True)))
    one_raw, one_host = median(rows["raw-1"], "wall_s"), median(rows["host-1"], "wall_s")
    extra = (one_host / one_raw - 1) * 100
    print(f"single request: raw {one_raw * 1000:.0f} ms, via the gpu_host {one_host * 1000:.0f} ms ({extra:+.1f}%)")
    ratios = [h["wall_s"] / r["wall_s"] for h, r in zip(rows["host-1"], rows["raw-1"], strict=True)]
    print(
        f"  per-round ratio host/raw: {', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})"
    )
    one_engine = median(rows["engine-1"], "wall_s")
    ratios = [h["wall_s"] / e["wall_s"] for h, e in zip(rows["host-1"], rows["engine-1"], strict=True)]
    print(
        f"single request: the host's engine in-process (no NATS) {one_engine * 1000:.0f} ms; published on NATS ->"
        f" result {one_host * 1000:.0f} ms ({(one_host / one_engine - 1) * 100:+.1f}%); per round "
        f"{', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})"
    )
    added = [(h["wall_s"] - h["mean_generation_s"]) * 1000 for h in rows["host-1"]]
    share = [h["wall_s"] / h["mean_generation_s"] - 1 for h in rows["host-1"]]
    print(
        f"  within each request (publish -> result minus the engine's generation time): "
        f"{', '.join(f'{a:.1f} ms' for a in added)} = median {statistics.median(share) * 100:.2f}%"
    )
    swap_ms, load_ms = median(rows["swap"], "swap_ms"), median(rows["swap"], "load_ms")
    raw_ms = median(rows["raw-load"], "load_ms")
    print(
        f"swap {args.model} -> {args.swap_to}: {swap_ms:.0f} ms (its load {load_ms:.0f} ms);"
        f" raw Llama() load {raw_ms:.0f} ms"
    )
    out = REPO / "bench" / "results" / f"local_inference-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=1))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
