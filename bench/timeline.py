"""Where each millisecond of a request goes at concurrency 1, process by process: the kernel's scheduler
trace (``perf sched``) of the full stack, followed from the backend's answer to the next request reaching
the backend, against the same trace of calling the backend directly.

    sudo .venv/bin/python -m bench.timeline [--delay-ms 50] [--seconds 3]     (needs Debian's linux-perf)

``bench/hops.py`` times a request between the stored messages (server timestamps); this splits the same
time by the processes that have to run for it. One client (this process) sends one request at a time
through the full stack of ``bench/gateway.py`` (every actor, authentication and budgets on, the routed
``orchestra`` row: no cache), while ``perf sched record`` traces every wake-up and context switch. A cycle
is followed wake-up by wake-up (``perf sched timehist -w``):

    backend answers -> cloud_proxy -> nats-server -> gateway -> client -> gateway -> nats-server -> router
    -> nats-server -> cloud_proxy -> backend (the next request)

For each stage: how long the process waited for a CPU once woken (``sch delay``) and how long it then took
until it woke the next one (its work, and for the nats-server its own threads handing the message on). A
cycle whose chain breaks (a process that was already running is not woken) is left out; the number used
is printed. The direct row is the same cycle without the orchestra: backend -> client -> backend. Also
per process: CPU and activations per cycle, the off-path actors and the nats-server included (their CPU
is time the path's processes may wait for a core: 2 vCPUs here).

Writes bench/results/timeline-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.gateway import BODY, NO_CACHE, REPO, Proc, load, start_backends, start_stack, wait_http
from bench.record import save
from bus.server import EmbeddedNats
from tests.support.profile import register_server

NATS = "nats-server"
PATH = ("cloud_proxy", NATS, "gateway", "client", "gateway", NATS, "router", NATS, "cloud_proxy", "backend")
STAGES = (
    "cloud_proxy: answer read -> result published",
    "nats-server: result stored -> gateway woken",
    "gateway: result -> HTTP answer written",
    "client: answer read -> next request sent",
    "gateway: request read -> REQUESTS published",
    "nats-server: request stored -> router woken",
    "router: request -> DISPATCH published",
    "nats-server: dispatch stored -> cloud_proxy woken",
    "cloud_proxy: dispatch -> HTTP request sent",
)
DIRECT_STAGES = ("client: answer read -> next request sent",)

LINE = re.compile(r"\s*(\d+\.\d+)\s+\[(\d+)\]\s+(\S+)\s+(.*)$")
TASK = re.compile(r"\[(\d+)(?:/(\d+))?\]")


@dataclass
class Trace:
    wakes: list[tuple[float, str, str]] = field(default_factory=list)  # (time, waker, wakee) by process name
    runs: dict[str, list[tuple[float, float, float]]] = field(default_factory=lambda: defaultdict(list))
    # process -> (switched out at, sch delay, run) in ms / s


def who(task: str, names: dict[int, str]) -> str | None:
    m = TASK.search(task)
    if m is None:
        return None
    pid = int(m.group(2) or m.group(1))
    if task.startswith(NATS):
        return NATS
    return names.get(pid)


def parse(text: str, names: dict[int, str]) -> Trace:
    """``perf sched timehist -w`` lines: wake-ups (``awakened: <task>``) and switch-outs (wait, sch delay,
    run time in ms)."""
    trace = Trace()
    for line in text.splitlines():
        m = LINE.match(line)
        if m is None:
            continue
        at, task, rest = float(m.group(1)), m.group(3), m.group(4)
        me = who(task, names)
        if "awakened:" in rest:
            target = who(rest.split("awakened:", 1)[1].strip(), names)
            if me is not None and target is not None and target != me:
                trace.wakes.append((at, me, target))
            continue
        cols = rest.split()
        if me is not None and len(cols) >= 3:
            try:
                trace.runs[me].append((at, float(cols[1]), float(cols[2])))
            except ValueError:
                continue
    return trace


def delay_after(trace: Trace, proc: str, woken_at: float) -> float:
    """The sch delay of ``proc``'s first run after it was woken at ``woken_at`` (ms)."""
    for out_at, delay, run in trace.runs.get(proc, []):
        if out_at - run / 1000 >= woken_at - 1e-6:
            return delay
    return 0.0


def cycles(trace: Trace, path: tuple[str, ...], first: str = "backend") -> list[list[tuple[float, float]]]:
    """Each cycle as its stages: (ms from being woken to waking the next, sch delay ms)."""
    wakes = trace.wakes
    out: list[list[tuple[float, float]]] = []
    starts = [i for i, (_, waker, wakee) in enumerate(wakes) if waker == first and wakee == path[0]]
    for i in starts:
        at = wakes[i][0]
        stages: list[tuple[float, float]] = []
        j = i
        ok = True
        for k in range(len(path) - 1):
            cur, nxt = path[k], path[k + 1]
            j = next((n for n in range(j + 1, len(wakes)) if wakes[n][1] == cur and wakes[n][2] == nxt), -1)
            if j < 0 or wakes[j][0] - at > 0.5:  # no such wake-up within the cycle: the chain broke
                ok = False
                break
            stages.append(((wakes[j][0] - at) * 1000, delay_after(trace, cur, at) if cur != NATS else 0.0))
            at = wakes[j][0]
        if ok:
            out.append(stages)
    return out


def per_process(trace: Trace, seconds: float, n_cycles: int) -> dict[str, dict[str, float]]:
    return {
        proc: {"cpu_ms": sum(r for _, _, r in runs) / max(n_cycles, 1), "activations": len(runs) / max(n_cycles, 1)}
        for proc, runs in sorted(trace.runs.items())
    }


async def traced(seconds: float, url: str, headers: dict[str, str], body: bytes, out: Path) -> str:
    """c=1 load for warm-up + ``seconds``, ``perf sched record`` over the measured part."""
    loading = asyncio.ensure_future(load(url, headers, body, 1, seconds + 2.0))
    await asyncio.sleep(1.5)
    perf = await asyncio.create_subprocess_exec(
        "perf", "sched", "record", "-a", "-o", str(out), "--", "sleep", str(seconds),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await perf.wait()
    await loading
    hist = await asyncio.create_subprocess_exec(
        "perf", "sched", "timehist", "-i", str(out), "-w", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )  # fmt: skip
    text, _ = await hist.communicate()
    return text.decode(errors="replace")


def table(rows: list[list[tuple[float, float]]], names: tuple[str, ...]) -> list[dict[str, float | str]]:
    result: list[dict[str, float | str]] = []
    for k, name in enumerate(names):
        spans = [c[k][0] for c in rows]
        delays = [c[k][1] for c in rows]
        result.append({"stage": name, "ms_p50": statistics.median(spans), "sch_delay_p50": statistics.median(delays)})
    return result


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    procs: list[Proc] = []
    nats = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=tmp / "auth")
    try:
        nats.start()
        register_server(nats)
        fast, slow = start_backends(tmp, procs, slow_ms=args.delay_ms)  # the traced requests go to the "slow" one
        backend_pid = next(p.popen.pid for p in procs if p.name == "fake-slow")
        stack = await start_stack(argparse.Namespace(stack="full"), tmp, nats, procs, fast, slow, REPO)
        await wait_http(stack.url.replace("/v1/chat/completions", "/healthz"), {})
        names = {pid: name for name, pid in stack.pids.items() if name != NATS}
        names |= {backend_pid: "backend", os.getpid(): "client"}
        model = "bench/slow"
        direct_url = f"http://127.0.0.1:{slow}/v1/chat/completions"
        plain = json.dumps({**BODY, "model": model}).encode()
        routed = json.dumps({**BODY, "model": model, **NO_CACHE}).encode()
        texts = {
            "direct": await traced(args.seconds, direct_url, {}, plain, tmp / "direct.data"),
            "orchestra": await traced(args.seconds, stack.url, stack.auth, routed, tmp / "orch.data"),
        }
        direct, orch = parse(texts["direct"], names), parse(texts["orchestra"], names)
        d_cycles = cycles(direct, ("client", "backend"))
        o_cycles = cycles(orch, PATH)
        if not d_cycles or not o_cycles:
            raise SystemExit(f"no complete cycle found (direct {len(d_cycles)}, orchestra {len(o_cycles)})")
        d_total = statistics.median(sum(s for s, _ in c) for c in d_cycles)
        o_total = statistics.median(sum(s for s, _ in c) for c in o_cycles)
        stages = table(o_cycles, STAGES)
        print(f"\nbackend {args.delay_ms} ms, c=1: one cycle from the backend's answer to the next request reaching it")
        print(f"(medians of {len(o_cycles)} orchestra cycles and {len(d_cycles)} direct ones)\n")
        print(f"{'stage':52} {'ms':>7} {'of which waiting for a CPU':>27}")
        for stage in stages:
            print(f"{stage['stage']:52} {stage['ms_p50']:7.3f} {stage['sch_delay_p50']:27.3f}")
        print(f"{'orchestra cycle':52} {o_total:7.3f}")
        print(f"{'direct cycle (client -> backend)':52} {d_total:7.3f}")
        print(f"{'added by the orchestra':52} {o_total - d_total:7.3f}")
        procs_table = per_process(orch, args.seconds, len(o_cycles))
        print(f"\n{'process':20} {'CPU ms / cycle':>15} {'activations / cycle':>20}")
        for proc, use in sorted(procs_table.items(), key=lambda kv: -kv[1]["cpu_ms"]):
            print(f"{proc:20} {use['cpu_ms']:15.3f} {use['activations']:20.1f}")
        return {
            "traces": texts,  # written apart with --keep, not into the results
            "names": {str(pid): name for pid, name in names.items()},
            "machine": platform.platform(),
            "delay_ms": args.delay_ms,
            "seconds": args.seconds,
            "cycles": len(o_cycles),
            "stages": stages,
            "orchestra_cycle_ms": o_total,
            "direct_cycle_ms": d_total,
            "added_ms": o_total - d_total,
            "processes": procs_table,
        }
    finally:
        for p in reversed(procs):
            p.stop()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=int, default=50, help="the traced backend's time per answer, ms")
    parser.add_argument("--seconds", type=float, default=3.0, help="traced seconds per contender")
    parser.add_argument("--keep", metavar="DIR", help="keep the scheduler traces (perf sched timehist -w) there")
    args = parser.parse_args()

    if shutil.which("perf") is None:
        raise SystemExit("perf not found: it comes with Debian's linux-perf package (and needs root)")
    import uvloop

    uvloop.install()
    out = asyncio.run(run(args))
    traces = out.pop("traces")
    if args.keep:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
        for name, text in dict(traces).items():  # type: ignore[call-overload]
            (keep / f"{name}.timehist.txt").write_text(text)
        (keep / "names.json").write_text(json.dumps(out["names"]))
    save("timeline", out)


if __name__ == "__main__":
    main()
