"""An innocent client's latency, quiet and while hostile clients hammer the front door, on the real stack.

    PYTHONPATH=$PWD .venv/bin/python -m bench.hostile [--requests 200] [--attackers 2] [--rounds 2]

The stack: a nats-server with auth, the gateway, router, cache and diversity_monitor as processes (their
own roles and permissions), and a scripted worker in this process (the answers' text does not matter
here). The innocent client asks ``auto`` at temperature 0, so each of its requests goes gateway ->
router -> cache lookup (normalise, key, exact + semantic) -> answer: every actor a hostile text reaches.

Families (each a few shapes, sent in a loop by ``--attackers`` threads of a separate process while the innocent client
measures ``--requests`` requests): long digit runs, punctuation, unicode (CJK, zero-width, right-to-left,
chat-template markers), nesting, 1 MB+ bodies, and forged metric labels (results with made-up model,
family and target names published on RESULTS; the monitor's series are counted before and after).
Each family is preceded by its own quiet measurement (the machine is shared and noisy: a family is
compared with the quiet minutes next to it). Prints p50 / p99 per phase and the ratio to the quiet
p99 beside it, the hostile requests' status codes and slowest answer, and writes
bench/results/hostile-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import nats

from bus import subjects
from bus.server import EmbeddedNats
from schemas.codec import encode
from schemas.config import load_config
from schemas.result import GenerateResult, Usage
from tests.support import minilm
from tests.support.procs import ActorProcess
from tests.support.profile import register_server, write_profile
from tests.support.scripted_worker import ScriptedWorker

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KEY = "sk-bench-hostile-4c1f9e0a2b"  # the innocent client's (and, by default, the attackers')
TENANT_KEY = "sk-bench-tenant-9d2e7b51c3"  # --tenant-limits: the attackers' own key, with per-key limits
OWN_KEY = "sk-bench-attacker-5e8a17c6d0"  # --own-key: the attackers' own key, without limits
ATTACKER_CPUS: set[int] = set()  # --split-cores: where the attackers' clients run (empty: anywhere)
TENANT_LIMITS = {"rpm": 120, "tokens_per_min": 200_000, "concurrent": 2}  # a lab's limits for one tenant
MAX_BODY = 4 * 2**20
INNOCENT = {
    "model": "auto",
    "temperature": 0,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


def _chat(text: str, **extra: Any) -> bytes:
    return json.dumps(
        {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}], **extra}
    ).encode()


def families() -> dict[str, list[tuple[str, bytes]]]:
    """(path, body) shapes per family; built once, before any timing."""
    nested = "[" * 200_000 + "]" * 200_000
    return {
        "digits": [
            ("chat/completions", _chat("7" * 23_900)),
            ("chat/completions", _chat("1234567890" * 50_000)),
            ("completions", json.dumps({"model": "auto", "prompt": "9" * 300_000, "max_tokens": 4}).encode()),
        ],
        "punctuation": [
            ("chat/completions", _chat("." * 120_000)),
            ("chat/completions", _chat("." * 30_000 + "x")),
            ("chat/completions", _chat("!?,;:-" * 100_000)),
            ("chat/completions", _chat("`" * 200_000)),
        ],
        "unicode": [
            ("chat/completions", _chat("日本" * 200_000)),
            ("chat/completions", _chat("\u200b" * 300_000)),
            ("chat/completions", _chat("\u202e🙂é’" * 100_000)),
            ("chat/completions", _chat("<|im_start|>system\n" * 20_000)),
        ],
        "nesting": [
            ("chat/completions", f'{{"model":"auto","messages":[{{"role":"user","content":{nested}}}]}}'.encode()),
            ("chat/completions", ('{"a":' * 100_000 + "1" + "}" * 100_000).encode()),
            ("chat/completions", _chat("(" * 300_000)),
        ],
        "1MB+ bodies": [
            ("completions", json.dumps({"model": "auto", "prompt": "x" * 1_000_001}).encode()),
            ("chat/completions", b'{"model":"auto","prompt":"' + b"." * (MAX_BODY + 1) + b'"}'),
            ("chat/completions", _chat("a " * 1_000_000)),
        ],
    }


def _attack_thread(
    url: str, key: str, shapes: list[tuple[str, bytes]], i: int, stop: Any, found: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    codes: Counter[int] = Counter()
    slowest = 0.0
    by_code: dict[int, float] = {}  # the slowest answer of each status
    with httpx.Client(timeout=120) as http:
        k = i
        while not stop.is_set():
            path, body = shapes[k % len(shapes)]
            k += 1
            started = time.monotonic()
            try:
                code = http.post(f"{url}/{path}", content=body, headers=headers).status_code
            except httpx.HTTPError:
                code = 0
            took = time.monotonic() - started
            slowest = max(slowest, took)
            by_code[code] = max(by_code.get(code, 0.0), took)
            codes[code] += 1
    found[f"codes{i}"], found[f"slowest{i}"], found[f"by_code{i}"] = dict(codes), slowest, by_code


def attack_process(url: str, key: str, family: str, n: int, stop: Any, out: Any, cpus: set[int] | None = None) -> None:
    """In a process of its own (its sending must not take this process's interpreter from the innocent
    client): ``n`` threads send the family's shapes in a loop until ``stop``; counts go to ``out``.
    ``cpus``: the cores the attackers may use (--split-cores: not the stack's)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    shapes = families()[family]
    found: dict[str, Any] = {}
    threads = [threading.Thread(target=_attack_thread, args=(url, key, shapes, i, stop, found)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes: Counter[int] = Counter()
    by_code: dict[int, float] = {}
    for i in range(n):
        codes.update(found.get(f"codes{i}", {}))
        for code, took in found.get(f"by_code{i}", {}).items():
            by_code[code] = max(by_code.get(code, 0.0), took)
    out.put((dict(codes), max(found.get(f"slowest{i}", 0.0) for i in range(n)), by_code))


class Attack:
    """One hostile family sent by ``n`` threads of another process while the block runs."""

    def __init__(self, url: str, key: str, family: str, n: int, cpus: set[int] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(
            target=attack_process, args=(url, key, family, n, self.stop, self.out, cpus), daemon=True
        )
        self.codes: dict[int, int] = {}
        self.slowest = 0.0
        self.by_code: dict[int, float] = {}

    def __enter__(self) -> Attack:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.codes, self.slowest, self.by_code = self.out.get(timeout=300)
        self.proc.join(30)


class Forger:
    """Results with made-up labels on RESULTS (the operator may publish anything), in a loop."""

    def __init__(self, server: EmbeddedNats) -> None:
        self.server = server
        self.stop = asyncio.Event()
        self.sent = 0
        self.codes: Counter[int] = Counter()
        self.slowest = 0.0

    async def run(self) -> None:
        nc = await nats.connect(self.server.url, **self.server.connect_options())
        js = nc.jetstream()
        try:
            while not self.stop.is_set():
                rid = uuid.uuid4().hex
                forged = GenerateResult(
                    request_id=rid, text="forged", model=f"m-{rid[:12]}", family=f"f-{rid[:8]}", tier="premium",
                    target=f"t-{rid[:10]}", usage=Usage(input_tokens=1, output_tokens=1), created_at=time.time(),
                )  # fmt: skip
                await js.publish(subjects.result(rid, "forger"), encode(forged), headers={"Nats-Msg-Id": rid})
                self.sent += 1
                self.codes[0] += 1
                await asyncio.sleep(0.005)
        finally:
            await nc.close()


INNOCENT_ERRORS: Counter[int] = Counter()  # innocent answers other than 200, by status (reported)


async def innocent(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(n):
        t = time.monotonic()
        async with http.post(f"{url}/chat/completions", json=INNOCENT, headers=headers) as r:
            await r.read()
            if r.status != 200:
                INNOCENT_ERRORS[r.status] += 1
        out.append((time.monotonic() - t) * 1000.0)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def series(http: aiohttp.ClientSession, metrics_url: str) -> int:
    async with http.get(metrics_url) as r:
        text = await r.text()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


async def start_stack(
    tmp: Path, tenant_limits: bool = False
) -> tuple[EmbeddedNats, ScriptedWorker, list[ActorProcess], str, str]:
    server = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=tmp / "auth").start()
    register_server(server)
    data = tmp / "data"
    data.mkdir()
    (data / "keys.txt").write_text(f"bench:{KEY}\nattacker:{OWN_KEY}\n")
    (data / "tenant.key").write_text(TENANT_KEY)
    tenant = [{"id": "tenant", "secret": {"file": str(data / "tenant.key")}, "limits": TENANT_LIMITS}]
    profile = write_profile(
        tmp / "profile",
        server.url,
        data_dir=data,
        overrides={
            "gateway": {"port": 0, "api_keys_file": "keys.txt", "request_timeout": "60s",
                        "api_keys": tenant if tenant_limits else []},
            "router": {"attempt_timeout": "20s"},
            "cache": {"semantic": {"model_dir": str(minilm.model_dir())}},
        },
    )  # fmt: skip
    cfg = load_config(profile)
    worker = ScriptedWorker(cfg, hosts={"cpu0": ["smollm2-135m", "gemma3-270m"]}, providers=list(cfg.providers),
                            answers=dict.fromkeys(cfg.models, "ok"))  # fmt: skip
    nc = await nats.connect(server.url, **server.connect_options())
    await worker.start(nc)
    procs = [ActorProcess(m, profile, *a).start() for m, a in (
        ("actors.cache", []), ("actors.router", []), ("actors.diversity_monitor", []),
        ("actors.gateway", ["--port", "0"]))]  # fmt: skip
    for p in procs:
        await asyncio.to_thread(p.wait_log, "started", 180.0)
    gw = re.search(r"gateway listening on http://[^:]+:(\d+)/v1", procs[3].output())
    mon = re.search(r"metrics on http://([^:]+):(\d+)/metrics", procs[2].output())
    assert gw and mon, "no gateway / metrics port in the logs"
    return server, worker, procs, f"http://127.0.0.1:{gw.group(1)}/v1", f"http://{mon.group(1)}:{mon.group(2)}/metrics"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    shapes = families()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    server, worker, procs, url, metrics_url = await start_stack(tmp, args.tenant_limits)
    attacker_key = TENANT_KEY if args.tenant_limits else OWN_KEY if args.own_key else KEY
    rows: list[dict[str, Any]] = []
    pids = {p.module.removeprefix("actors."): p.proc.pid for p in procs if p.proc is not None}
    if server.proc is not None:
        pids["nats-server"] = server.proc.pid
    try:
        async with aiohttp.ClientSession() as http:
            await innocent(http, url, 30)  # warm: the first answer is cached, the rest are lookups
            for rnd in range(1, args.rounds + 1):
                for family in [f for f in [*shapes, "forged labels"] if not args.families or f in args.families]:
                    cpu_quiet = cpu_of(pids)
                    quiet = await innocent(http, url, args.requests)
                    before = await series(http, metrics_url)
                    cpu_before = cpu_of(pids)
                    innocent_cpu = {k: cpu_before[k] - cpu_quiet[k] for k in pids}  # what the innocent costs
                    if family == "forged labels":
                        forger = Forger(server)
                        task = asyncio.create_task(forger.run())
                        busy = await innocent(http, url, args.requests)
                        forger.stop.set()
                        await task
                        codes, slowest, sent, by_code = dict(forger.codes), 0.0, forger.sent, {}
                    else:
                        attack = Attack(url, attacker_key, family, args.attackers, ATTACKER_CPUS)
                        with attack:
                            await asyncio.sleep(1.0)  # the attack process starts (imports) before we measure
                            busy = await innocent(http, url, args.requests)
                        codes, slowest, sent = attack.codes, attack.slowest, sum(attack.codes.values())
                        by_code = {c: round(t, 3) for c, t in attack.by_code.items()}
                    after = await series(http, metrics_url)
                    cpu_after = cpu_of(pids)
                    # CPU per hostile request: the phase's CPU less the innocent's (the same number of innocent
                    # requests as in the quiet phase); robust to a loaded machine where latencies are not
                    per_request = {
                        k: 1000.0 * max(0.0, cpu_after[k] - cpu_before[k] - innocent_cpu[k]) / max(1, sent)
                        for k in pids
                    }
                    innocent_errors = dict(INNOCENT_ERRORS)
                    INNOCENT_ERRORS.clear()
                    row: dict[str, Any] = {
                        "round": rnd, "family": family,
                        "quiet_p50_ms": statistics.median(quiet), "quiet_p99_ms": pct(quiet, 0.99),
                        "busy_p50_ms": statistics.median(busy), "busy_p99_ms": pct(busy, 0.99),
                        "hostile_sent": sent, "hostile_codes": codes, "hostile_slowest_s": round(slowest, 3),
                        "hostile_slowest_by_code_s": by_code,
                        "series_before": before, "series_after": after, "innocent_errors": innocent_errors,
                        "cpu_ms_per_hostile_request": {k: round(v, 2) for k, v in per_request.items()},
                    }  # fmt: skip
                    row["p99_ratio"] = row["busy_p99_ms"] / row["quiet_p99_ms"]
                    rows.append(row)
                    print(
                        f"round {rnd} {family:14s} quiet p50 {row['quiet_p50_ms']:6.1f}"
                        f" p99 {row['quiet_p99_ms']:6.1f} ms"
                        f" | hostile p50 {row['busy_p50_ms']:6.1f} p99 {row['busy_p99_ms']:6.1f} ms"
                        f" | x{row['p99_ratio']:.2f} | sent {sent} codes {codes} slowest {slowest:.2f}s"
                        f" | series {before}->{after} | innocent errors {innocent_errors}"
                        f" | CPU ms per hostile request {row['cpu_ms_per_hostile_request']}",
                        flush=True,
                    )
    finally:
        for p in reversed(procs):
            p.stop()
        await worker.stop(grace=0.5)
        server.stop()
    return {"rows": rows}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        codes: Counter[int] = Counter()
        for r in mine:
            codes.update({int(k): v for k, v in r["hostile_codes"].items()})
        out.append({
            "family": family,
            "quiet_p50_ms": statistics.median(r["quiet_p50_ms"] for r in mine),
            "quiet_p99_ms": statistics.median(r["quiet_p99_ms"] for r in mine),
            "busy_p50_ms": statistics.median(r["busy_p50_ms"] for r in mine),
            "busy_p99_ms": statistics.median(r["busy_p99_ms"] for r in mine),
            "p99_ratio": statistics.median(r["p99_ratio"] for r in mine),
            "codes": dict(codes), "slowest_s": max(r["hostile_slowest_s"] for r in mine),
            "slowest_4xx_s": max([t for r in mine for c, t in r["hostile_slowest_by_code_s"].items()
                                  if 400 <= int(c) < 500] or [0.0]),
            "hostile_sent": statistics.median(r["hostile_sent"] for r in mine),
            "series_growth": max(r["series_after"] - r["series_before"] for r in mine),
            "cpu_ms_per_request": {k: statistics.median(r["cpu_ms_per_hostile_request"][k] for r in mine)
                                   for k in mine[0]["cpu_ms_per_hostile_request"]},
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="innocent requests per phase")
    parser.add_argument("--attackers", type=int, default=2, help="hostile client threads")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every family (medians)")
    parser.add_argument(
        "--tenant-limits",
        action="store_true",
        help=f"attackers send with a key of their own limited to {TENANT_LIMITS} (a lab's tenant)",
    )
    parser.add_argument(
        "--own-key",
        action="store_true",
        help="attackers send with a key of their own without limits (what per-key fair queueing "
        "tells apart from the innocent client's; by default they share its key)",
    )
    parser.add_argument(
        "--split-cores",
        action="store_true",
        help="the stack and the innocent client on the first half of the cores, the attackers' own "
        "HTTP clients on the rest (their client CPU is not the stack's)",
    )
    parser.add_argument("--families", nargs="*", default=[], help="only these families (default: all)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.split_cores:
        cores = sorted(os.sched_getaffinity(0))
        half = max(1, len(cores) // 2)
        os.sched_setaffinity(0, set(cores[:half]))  # inherited by every actor process started from here
        ATTACKER_CPUS.update(cores[half:] or cores)
    found = asyncio.run(main_async(args))
    table = summarise(found["rows"])
    print(f"\n{'family':14s} {'quiet p50':>9s} {'quiet p99':>9s} {'hostile p50':>11s} {'hostile p99':>11s} "
          f"{'p99 x':>6s} {'slowest s':>9s}  hostile codes / series growth")  # fmt: skip
    for t in table:
        print(f"{t['family']:14s} {t['quiet_p50_ms']:9.1f} {t['quiet_p99_ms']:9.1f} {t['busy_p50_ms']:11.1f} "
              f"{t['busy_p99_ms']:11.1f} {t['p99_ratio']:6.2f} {t['slowest_s']:9.2f}  {t['codes']} "
              f"(slowest 4xx {t['slowest_4xx_s']:.2f} s, {t['hostile_sent']:.0f} sent per phase) / "
              f"+{t['series_growth']}; CPU ms/request {t['cpu_ms_per_request']}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"hostile-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()}
    machine["load_average"] = [load_before, os.getloadavg()]  # (1, 5, 15 min) at the start and the end
    print(f"load average (1, 5, 15 min): start {load_before}, end {os.getloadavg()}")
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "table": table, **found}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
