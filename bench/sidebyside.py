"""Ways of doing one call, measured side by side in one process: this process's CPU time per call and the
p50 round trip, at each concurrency, each way first in every other round (bench/publish.py,
bench/http_client.py).

    rows = await alternate({"a": call_a, "b": call_b}, count=3000, rounds=3, concurrencies=(1, 64), unit="msg")
    print_medians(rows, unit="msg")
    bench.record.save("publish", {"machine": ..., "rows": rows})
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

Call = Callable[[], Awaitable[object]]
Rows = dict[str, dict[str, list[float]]]  # "<way> c=<n>" -> {"cpu_us": [per round], "p50_ms": [...]}


async def timed(call: Call, count: int, concurrency: int) -> tuple[float, float]:
    """``count`` calls, ``concurrency`` in flight: CPU µs per call (user + system) and p50 ms."""
    latencies: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - t0) * 1000)

    cpu = time.process_time()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    return (time.process_time() - cpu) * 1e6 / len(latencies), statistics.median(latencies)


async def alternate(
    ways: dict[str, Call], *, count: int, rounds: int, concurrencies: tuple[int, ...], unit: str
) -> Rows:
    rows: Rows = {}
    for rnd in range(rounds):
        for concurrency in concurrencies:
            order = list(ways.items()) if rnd % 2 == 0 else list(reversed(ways.items()))
            for name, call in order:
                cpu_us, p50 = await timed(call, count, concurrency)
                cell = rows.setdefault(f"{name} c={concurrency}", {"cpu_us": [], "p50_ms": []})
                cell["cpu_us"].append(cpu_us)
                cell["p50_ms"].append(p50)
                print(f"round {rnd + 1} {name:22} c={concurrency:<3} {cpu_us:7.1f} µs CPU/{unit}  p50 {p50:6.3f} ms")
    return rows


def print_medians(rows: Rows, *, unit: str) -> None:
    print(f"\n{'way':30} {f'CPU µs/{unit} (median)':>21} {'p50 ms':>8}")
    for key, cell in rows.items():
        print(f"{key:30} {statistics.median(cell['cpu_us']):21.1f} {statistics.median(cell['p50_ms']):8.3f}")
