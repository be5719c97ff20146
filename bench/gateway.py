"""What the orchestra adds in front of a fast backend, side by side with calling the backend directly
and with LiteLLM's proxy, all in one run on the same machine.

    .venv/bin/python -m bench.gateway [--seconds 4] [--rounds 3] [--no-litellm] [--stack full|minimal]

A fake OpenAI-compatible backend (bench/fake_openai.py; 0 ms and 50 ms per answer) is configured as a
cloud provider of the orchestra: each request goes gateway -> REQUESTS -> router (+ budget reservation)
-> DISPATCH -> cloud_proxy -> backend -> RESULTS -> gateway. ``--stack full`` (the default) runs the
stack as users run it: every actor of the Procfile (cache, monitor, rotator and gpu_host too, all of
them consuming results), authentication on, budgets on; two rows: ``orchestra`` (each request asks
the cache not to answer or store it: every request is routed and paid) and ``orch-cached`` (the same
greedy request each time: cache hits after the first). ``--stack minimal``: gateway, router,
budget_guard and cloud_proxy only, the cache off (the rows of earlier runs). LiteLLM runs in its own
venv (.venv-litellm, created on first use: `pip install 'litellm[proxy]'`), one worker, offline cost map.

Besides requests/s and p50/p99 per (delay, concurrency, contender), the median over the rounds, it
records the CPU each orchestra process spent per request (/proc, ms) and, for a sample of requests,
the time spent in each hop (bench/hops.py: gateway in, router, worker, gateway out), and writes
bench/results/gateway-<time>.json.

``--before DIR`` runs a second orchestra, the same stack from another checkout (its own nats-server and
actors, idle while the other is measured), as the contender ``orch-before``, in every cell right beside
``orchestra`` (first in every other round): a before/after comparison on a shared machine whose load
moves between runs. ``git worktree add --detach /tmp/base main`` makes such a checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from bench.hops import HOPS, Trace, hop_table
from bench.record import save
from bus.server import EmbeddedNats
from tests.support.profile import register_server, write_profile

REPO = Path(__file__).resolve().parents[1]
LITELLM_VENV = REPO / ".venv-litellm"
BODY = {"model": "MODEL", "messages": [{"role": "user", "content": "Say something short."}]}
MINIMAL = ("budget_guard", "cloud_proxy", "router", "gateway")
FULL = ("budget_guard", "cloud_proxy", "router", "gpu_host", "cache", "diversity_monitor", "rotator", "gateway")
ACTOR_ARGS = {"gpu_host": ["--host", "cpu0"]}
NO_CACHE: dict[str, object] = {"orchestra": {"no_cache": True, "no_store": True}}
STREAM_CONC = 16  # the streamed row: every contender again with "stream": true, the whole stream read


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Cell:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # process -> CPU ms per request, per round


def start(name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None, cwd: Path = REPO) -> Proc:
    log = logdir / f"{name}.log"
    popen = subprocess.Popen(
        argv, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    return Proc(name, popen, log)


def wait_log(proc: Proc, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = proc.log.read_text(errors="replace")
        if text in out:
            return out
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{out[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name}: {text!r} not seen in {timeout}s:\n{proc.log.read_text()[-2000:]}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_backends(tmp: Path, procs: list[Proc], slow_ms: int = 50, *, echo: bool = False) -> tuple[int, int]:
    """The two fake OpenAI backends (0 ms and ``slow_ms`` per answer), each up before this returns: their ports.
    ``echo``: answers repeat the request (each differs), else one fixed answer."""
    fast, slow = free_port(), free_port()
    for name, port, delay in (("fake-fast", fast, 0), ("fake-slow", slow, slow_ms)):
        argv = [sys.executable, "bench/fake_openai.py", "--port", str(port), "--delay-ms", str(delay)]
        p = start(name, [*argv, "--echo"] if echo else argv, tmp)
        procs.append(p)
        wait_log(p, "listening on")
    return fast, slow


async def wait_http(url: str, headers: dict[str, str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, headers=headers) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def attach_spies(args: argparse.Namespace, label: str, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """``--pyspy DIR``: py-spy samples every Python actor during the measured seconds of the first round
    (collapsed stacks, one file per actor and cell); ``--strace DIR``: the system calls each process
    makes then (``strace -c``). Both cost CPU: such a run's rates are not quoted."""
    out = args.pyspy or args.strace
    if out is None:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    stem = label.replace(" ", "_").replace("=", "")
    seconds = str(max(1, int(args.seconds)))
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    procs = []
    for name, pid in pids.items():
        file = f"{out}/{stem}-{name}.txt"
        if args.pyspy and name != "nats-server":
            argv = [pyspy, "record", "--pid", str(pid), "--duration", seconds, "--rate", "200"]
            argv += ["--format", "raw", "--nonblocking", "--output", file]
        elif args.strace:
            argv = ["timeout", "-s", "INT", seconds, "strace", "-c", "-f", "-p", str(pid), "-o", file]
        else:
            continue
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, headers: dict[str, str], body: bytes, concurrency: int, seconds: float, trace: Trace | None = None
) -> tuple[float, float, float, int, int]:
    """Closed-loop load: ``concurrency`` clients for ``seconds`` (after 0.5 s warm-up). Returns req/s,
    p50, p99, errors and every request answered (warm-up included: the CPU figures divide by it)."""
    latencies: list[float] = []
    errors = 0
    total = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        start_at = time.perf_counter()
        measure_from = start_at + 0.5
        stop_at = measure_from + seconds

        async def client() -> None:
            nonlocal errors, total
            while (t0 := time.perf_counter()) < stop_at:
                wall = time.time()
                try:
                    async with http.post(url, data=body) as r:
                        data = await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                t1 = time.perf_counter()
                total += ok
                if t0 >= measure_from:
                    if ok:
                        latencies.append((t1 - t0) * 1000)
                        if trace is not None and len(trace.seen) < trace.limit:
                            trace.note(wall, time.time(), str(json.loads(data).get("id", "")))
                    else:
                        errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors, total
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / seconds, p50, p99, errors, total


def orchestra_profile(tmp: Path, nats_url: str, fast: int, slow: int, port: int, *, cache: bool = False) -> Path:
    def provider(backend_port: int) -> dict[str, object]:
        return {
            "api": "openai",
            "tier": "together",
            "base_url": f"http://127.0.0.1:{backend_port}/v1",
            "api_key": {"env": "BENCH_BACKEND_KEY"},
            "limits": {},
            "concurrency": 256,
        }

    def model(provider_name: str) -> dict[str, object]:
        return {
            "kind": "cloud",
            "provider": provider_name,
            "remote_name": "fake",
            "family": "bench",
            "price": {"input": 0.10, "output": 0.10},
        }

    return write_profile(
        tmp / "profile",
        nats_url,
        data_dir=tmp / "data",
        overrides={
            "log_level": "INFO",
            "bus": {"consumers": {"ack_wait": "30s", "max_deliver": 5}},
            "gateway": {"port": port, "api_keys_file": "keys.txt"},
            "providers": {"bench_fast": provider(fast), "bench_slow": provider(slow)},
            "models": {"bench/fast": model("bench_fast"), "bench/slow": model("bench_slow")},
            "budgets": {
                "require_reservation": True,  # as in production: every paid call is reserved first
                "limits": [{"scope": "total", "period": "daily", "hard_usd": 1000000.0}],
            },
            "cache": {"enabled": cache},
        },
    )


def litellm_config(path: Path, fast: int, slow: int, master_key: str) -> None:
    lines = ["model_list:"]
    for name, port in (("bench/fast", fast), ("bench/slow", slow)):
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            "      model: openai/fake",
            f"      api_base: http://127.0.0.1:{port}/v1",
            "      api_key: sk-fake",
        ]
    lines += ["litellm_settings:", "  telemetry: false", "general_settings:", f"  master_key: {master_key}"]
    path.write_text("\n".join(lines) + "\n")


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print("creating .venv-litellm (pip install 'litellm[proxy]') ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


@dataclass
class Stack:
    profile: Path
    pids: dict[str, int]  # process -> pid, its nats-server included
    url: str
    auth: dict[str, str]


async def start_stack(
    args: argparse.Namespace, tmp: Path, nats: EmbeddedNats, procs: list[Proc], fast: int, slow: int, code: Path
) -> Stack:
    """The orchestra's actors on ``nats``, run from the checkout ``code`` (its own code on PYTHONPATH)."""
    full = args.stack == "full"
    port = free_port()
    profile = orchestra_profile(tmp, nats.url, fast, slow, port, cache=full)
    key = "orch-" + secrets.token_hex(16)
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    (tmp / "data" / "keys.txt").write_text(f"bench:{key}\n")
    env = {"BENCH_BACKEND_KEY": "sk-fake", "ORCHESTRA_CONFIG": str(profile), "PYTHONPATH": str(code)}
    pids: dict[str, int] = {"nats-server": nats.pid or 0}
    for actor in FULL if full else MINIMAL:
        argv = [sys.executable, "-m", f"actors.{actor}", "--config", str(profile), *ACTOR_ARGS.get(actor, [])]
        p = start(actor, argv, tmp, env, cwd=code)
        procs.append(p)
        wait_log(p, f"{actor} started", timeout=180)
        pids[actor] = p.popen.pid
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return Stack(profile, pids, url, {"Authorization": f"Bearer {key}"})


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    procs: list[Proc] = []
    # As the embedded default runs: authentication and the generated permissions on (--no-auth: off, to
    # measure what they cost side by side).
    nats = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=None if args.no_auth else tmp / "auth")
    stopping = [nats]
    try:
        nats.start()
        register_server(nats)
        fast_port, slow_port = start_backends(tmp, procs)
        ll_port = free_port()
        full = args.stack == "full"
        stack = await start_stack(args, tmp, nats, procs, fast_port, slow_port, REPO)
        profile, pids = stack.profile, stack.pids
        gw_url, gw_auth = stack.url, stack.auth
        contenders: dict[str, tuple[str, dict[str, str], dict[str, object]]] = {
            "direct": ("http://127.0.0.1:{port}/v1/chat/completions", {}, {}),
            "orchestra": (gw_url, gw_auth, NO_CACHE if full else {}),
        }
        stacks = {"orchestra": stack}
        if args.before:  # the same stack from another checkout, its own nats-server, alternated cell by cell
            nats_before = EmbeddedNats(
                store_dir=tmp / "before" / "nats", port=0, auth_dir=None if args.no_auth else tmp / "before" / "auth"
            )
            nats_before.start()
            stopping.append(nats_before)
            register_server(nats_before)
            old = await start_stack(args, tmp / "before", nats_before, procs, fast_port, slow_port, args.before)
            contenders["orch-before"] = (old.url, old.auth, NO_CACHE if full else {})
            stacks["orch-before"] = old
        if full:
            contenders["orch-cached"] = (gw_url, gw_auth, {"temperature": 0})  # greedy: cacheable
        if not args.no_litellm:
            master = "sk-bench-" + secrets.token_hex(16)
            litellm_config(tmp / "litellm.yaml", fast_port, slow_port, master)
            p = start(
                "litellm",
                [
                    str(ensure_litellm()),
                    "--config",
                    str(tmp / "litellm.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ll_port),
                    "--num_workers",
                    "1",
                ],
                tmp,
                {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            )
            procs.append(p)
            await wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", {})
            contenders["litellm"] = (
                f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                {"Authorization": f"Bearer {master}"},
                {},
            )
        for st in stacks.values():
            await wait_http(st.url.replace("/v1/chat/completions", "/healthz"), {})
        cells: dict[tuple[int, int, str], Cell] = {}
        traces: dict[str, Trace] = {}
        for rnd in range(args.rounds):
            for delay, port, model in ((0, fast_port, "bench/fast"), (50, slow_port, "bench/slow")):
                for conc in (1, 16, 64):
                    if args.cells and (delay, conc) not in args.cells:
                        continue
                    streamed = {f"{n}-stream": c for n, c in contenders.items() if n != "orch-cached"}
                    runs = {**contenders, **(streamed if conc == STREAM_CONC else {})}
                    order = sorted(runs.items(), key=lambda kv: rnd % 2 == 0 or "before" not in kv[0])
                    for name, (url, headers, ext) in order:  # orch-before first in every other round
                        stream = {"stream": True} if name.endswith("-stream") else {}
                        body = json.dumps({**BODY, "model": model, **ext, **stream}).encode()
                        ours = name.startswith("orch")
                        pids = stacks["orch-before" if name.startswith("orch-before") else "orchestra"].pids
                        label = f"{delay}ms c={conc} {name}"
                        # a stream has no JSON id to trace; the hop table reads this checkout's stack only
                        traced = ours and not stream and not args.no_trace and "before" not in name
                        trace = traces.setdefault(label, Trace()) if traced else None
                        before = {n: cpu_s(pid) for n, pid in pids.items()} if ours else {}
                        spies = attach_spies(args, label, pids) if ours and rnd == 0 else []
                        rps, p50, p99, errors, total = await load(
                            url.format(port=port), headers, body, conc, args.seconds, trace
                        )
                        for spy in spies:
                            spy.wait()
                        cell = cells.setdefault((delay, conc, name), Cell())
                        cell.rps.append(rps)
                        cell.p50.append(p50)
                        cell.p99.append(p99)
                        cell.errors += errors
                        for n, pid in pids.items() if ours and total else ():
                            cell.cpu_ms.setdefault(n, []).append((cpu_s(pid) - before[n]) * 1000 / total)
                        print(
                            f"round {rnd + 1} delay={delay}ms c={conc:<3} {name:<16} {rps:8.1f} req/s  "
                            f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}",
                            file=sys.stderr,
                            flush=True,
                        )
        hops = await hop_table(str(profile), traces)
        names = list(contenders) + [f"{n}-stream" for n in contenders if n != "orch-cached"]
        return report(cells, names, args, hops)
    finally:
        for p in reversed(procs):
            p.stop()
        for server in stopping:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    cells: dict[tuple[int, int, str], Cell],
    names: list[str],
    args: argparse.Namespace,
    hops: dict[str, dict[str, float]],
) -> dict[str, object]:
    med = statistics.median
    rows = []
    print(
        f"\n{'delay':>6} {'conc':>5}  {'contender':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'added p50 ms':>13} {'errors':>7}"
    )
    for delay in (0, 50):
        for conc in (1, 16, 64):
            if (delay, conc, "direct") not in cells:
                continue
            direct = cells[(delay, conc, "direct")]
            for name in names:
                if (delay, conc, name) not in cells:
                    continue  # the streamed contenders run at STREAM_CONC only
                c = cells[(delay, conc, name)]
                base = cells.get((delay, conc, "direct-stream" if name.endswith("-stream") else "direct"), direct)
                added = med(c.p50) - med(base.p50) if not name.startswith("direct") else 0.0
                row = {
                    "delay_ms": delay,
                    "concurrency": conc,
                    "contender": name,
                    "rps": med(c.rps),
                    "p50_ms": med(c.p50),
                    "p99_ms": med(c.p99),
                    "added_p50_ms": added,
                    "errors": c.errors,
                    "rounds": {"rps": c.rps, "p50": c.p50, "p99": c.p99},
                    "cpu_ms_per_request": {n: round(med(v), 3) for n, v in c.cpu_ms.items()},
                }
                rows.append(row)
                print(
                    f"{delay:>5}ms {conc:>5}  {name:<16} {row['rps']:>9.1f} {row['p50_ms']:>8.2f} "
                    f"{row['p99_ms']:>8.2f} {added:>13.2f} {c.errors:>7}"
                )
    cpu_rows = [r for r in rows if r["cpu_ms_per_request"]]
    if cpu_rows:
        first: dict[str, float] = cpu_rows[0]["cpu_ms_per_request"]  # type: ignore[assignment]
        procs = list(first)
        print("\nCPU ms per request (median over rounds), per process:")
        print(f"{'cell':<24} {'total':>6} " + " ".join(f"{n[:11]:>11}" for n in procs))
        for r in cpu_rows:
            cpu: dict[str, float] = r["cpu_ms_per_request"]  # type: ignore[assignment]
            label = f"{r['delay_ms']}ms c={r['concurrency']} {r['contender']}"
            print(f"{label:<24} {sum(cpu.values()):>6.2f} " + " ".join(f"{cpu.get(n, 0.0):>11.3f}" for n in procs))
    if hops:
        print("\nmedian ms per hop (sampled requests, server timestamps):")
        print(f"{'cell':<24} " + " ".join(f"{h:>11}" for h in HOPS) + f" {'n':>5}")
        for cell, h in hops.items():
            print(f"{cell:<24} " + " ".join(f"{h[k]:>11.2f}" for k in HOPS) + f" {int(h['n']):>5}")
    summary: dict[str, float | None] = {}
    for delay in (0, 50):
        if "litellm" in names and (delay, 64, "litellm") in cells:
            o, ll = cells[(delay, 64, "orchestra")], cells[(delay, 64, "litellm")]
            summary[f"rps_ratio_c64_delay{delay}"] = med(o.rps) / med(ll.rps) if med(ll.rps) else None
        if "litellm" in names and (delay, STREAM_CONC, "litellm-stream") in cells:
            o, ll = cells[(delay, STREAM_CONC, "orchestra-stream")], cells[(delay, STREAM_CONC, "litellm-stream")]
            summary[f"rps_ratio_stream_c{STREAM_CONC}_delay{delay}"] = med(o.rps) / med(ll.rps) if med(ll.rps) else None
        for name in ("orchestra", "orch-before"):
            if (delay, 1, name) in cells:
                o, d = cells[(delay, 1, name)], cells[(delay, 1, "direct")]
                summary[f"{name.replace('-', '_')}_added_p50_ms_c1_delay{delay}"] = med(o.p50) - med(d.p50)
        if (delay, 64, "orch-before") in cells:
            o, b = cells[(delay, 64, "orchestra")], cells[(delay, 64, "orch-before")]
            summary[f"after_over_before_rps_c64_delay{delay}"] = med(o.rps) / med(b.rps) if med(b.rps) else None
    print("\n" + "  ".join(f"{k}={v:.2f}" for k, v in summary.items() if v is not None))
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "seconds": args.seconds,
        "rounds": args.rounds,
        "stack": args.stack,
        "rows": rows,
        "hops_ms": hops,
        "summary": summary,
    }


def cells_arg(text: str) -> set[tuple[int, int]]:
    return {(int(d), int(c)) for d, c in (part.split(":") for part in text.split(","))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the whole matrix (medians)")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-auth", action="store_true", help="the nats-server without users and permissions")
    parser.add_argument(
        "--stack", choices=("full", "minimal"), default="full", help="every actor, or the four on the path"
    )
    parser.add_argument("--cells", type=cells_arg, default=None, help="only these cells: 0:64,50:1 (delay:c)")
    parser.add_argument("--no-trace", action="store_true", help="no per-hop sampling (and no hop table)")
    parser.add_argument("--pyspy", metavar="DIR", help="py-spy every actor in the first round's orchestra cells")
    parser.add_argument("--strace", metavar="DIR", help="count every process's system calls in those cells")
    parser.add_argument(
        "--before",
        metavar="DIR",
        type=lambda d: Path(d).resolve(),
        help="also run the stack from this checkout (e.g. `git worktree add /tmp/base main`), its own nats-server, "
        "as the contender orch-before, alternated with this checkout's in every cell",
    )
    args = parser.parse_args()
    if args.pyspy and not (shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()):
        parser.error("--pyspy needs py-spy, which is not a dependency: `.venv/bin/pip install py-spy`")
    save("gateway", uvloop.run(run(args)))


if __name__ == "__main__":
    main()
