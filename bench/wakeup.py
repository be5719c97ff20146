"""What waking an idle process costs on this machine: the floor under the orchestra's latency at concurrency 1.

    .venv/bin/python -m bench.wakeup [--rounds 3] [--count 150]

Two processes on uvloop, an echo server and a client, over loopback TCP (as every actor talks to the nats-
server); the server does a fixed piece of Python work per message (~20 µs warm) and answers with the CPU time
that work took. The client sends one line and waits for the answer, ``count`` times, with a pause before each
send of 0 (back to back), 1, 3, 10 and 50 ms; the pauses alternate within each round. A round trip wakes two
processes (the server, then the client). When a pause leaves the vCPUs idle long enough for the guest to halt
them, each wake-up has to wait for the hypervisor to run the vCPU again: the round trip after 50 ms idle
against back to back is what every process hop of a request pays when the requests come one at a time with a
50 ms backend between them (gateway -> nats-server -> router -> nats-server -> cloud_proxy -> backend ->
cloud_proxy -> nats-server -> gateway -> client: ~10 wake-ups, against ~3 when the client calls the backend
directly). The work's CPU time shows the other half of the cost: the same Python code runs slower in a process
that has been idle (its caches taken by others meanwhile).

Writes bench/results/wakeup-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import uvloop

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
PAUSES_MS = (0, 1, 3, 10, 50)


async def serve() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            t0 = time.thread_time()
            json.loads(json.dumps({"line": line.decode(), "work": list(range(50))}))  # a little work per message
            writer.write(f"{(time.thread_time() - t0) * 1e6:.1f}\n".encode())
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def measure(port: int, rounds: int, count: int) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """Median round trip and median CPU time of the server's work, µs, per pause: one figure per round."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    medians: dict[int, list[float]] = {p: [] for p in PAUSES_MS}
    work: dict[int, list[float]] = {p: [] for p in PAUSES_MS}
    try:
        for _ in range(rounds):
            for pause in PAUSES_MS:
                trips, spent = [], []
                for _ in range(count):
                    if pause:
                        await asyncio.sleep(pause / 1000)
                    t0 = time.perf_counter()
                    writer.write(b"ping\n")
                    spent.append(float(await reader.readline()))
                    trips.append((time.perf_counter() - t0) * 1e6)
                medians[pause].append(statistics.median(trips))
                work[pause].append(statistics.median(spent))
    finally:
        writer.close()
    return medians, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=150, help="round trips per pause and round")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve())
        return
    server = subprocess.Popen([sys.executable, "-m", "bench.wakeup", "--serve"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        medians, work = uvloop.run(measure(port, args.rounds, args.count))
    finally:
        server.terminate()
        server.wait(10)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"median µs per round, load average {' '.join(load)}: round trip | CPU time of the server's work")
    for pause, ms in medians.items():
        trips, cpu = ", ".join(f"{m:5.0f}" for m in ms), ", ".join(f"{w:5.1f}" for w in work[pause])
        print(f"  after {pause:>2} ms idle: {trips} | {cpu}")
    base, idle = statistics.median(medians[0]), statistics.median(medians[50])
    print(f"each wake-up after 50 ms idle costs ~{(idle - base) / 2:.0f} µs more than back to back")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"wakeup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"platform": platform.platform(), "python": platform.python_version(), "load": load}
    out.write_text(json.dumps({"machine": machine, "round_trip_us": medians, "work_cpu_us": work}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
