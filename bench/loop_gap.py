"""The gateway's event loop while heavy bodies are parsed: on the loop vs in the low-priority worker.

    PYTHONPATH=$PWD .venv/bin/python -m bench.loop_gap [--seconds 5] [--rounds 3]

A 1 ms ticker on the loop records how late each tick wakes (the time another client's request would
wait for the loop) while 2 tasks parse the hostile bench's unicode bodies (2.4 MB of escaped CJK, zero-width,
right-to-left) back to back, through the same ``parse_body`` the gateway runs, alternately with
``offload_workers`` 0 (on the loop) and 1 (actors/gateway/offload.py). Prints the longest gap and the
p99 / p50 gap per mode, medians over rounds, and bodies parsed per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from actors.gateway.offload import Offload, parse_body

BODIES = [
    json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()
    for text in ("日本" * 200_000, "\u200b" * 300_000, "\u202e🙂é’" * 100_000)
]
VISIBLE = frozenset({"auto"})


async def phase(offload: Offload, seconds: float) -> dict[str, float]:
    gaps: list[float] = []
    parsed = 0
    stop = time.monotonic() + seconds

    async def ticker() -> None:
        while time.monotonic() < stop:
            t = time.monotonic()
            await asyncio.sleep(0.001)
            gaps.append((time.monotonic() - t - 0.001) * 1000.0)

    async def attacker(i: int) -> None:
        nonlocal parsed
        k = i
        while time.monotonic() < stop:
            await offload.run(parse_body, BODIES[k % len(BODIES)], True, "bench", VISIBLE, 60.0)
            parsed += 1
            k += 1
            await asyncio.sleep(0)

    await asyncio.gather(ticker(), attacker(0), attacker(1))
    gaps.sort()
    return {
        "max_gap_ms": gaps[-1],
        "p99_gap_ms": gaps[int(0.99 * len(gaps))],
        "p50_gap_ms": gaps[len(gaps) // 2],
        "parsed_per_s": parsed / seconds,
    }


async def main_async(args: argparse.Namespace) -> None:
    rows: dict[str, list[dict[str, float]]] = {"on the loop": [], "worker (nice 10)": []}
    worker = Offload(1)
    await worker.run(os.getpid)  # spawned before timing
    try:
        for _ in range(args.rounds):
            rows["on the loop"].append(await phase(Offload(0), args.seconds))
            rows["worker (nice 10)"].append(await phase(worker, args.seconds))
    finally:
        await worker.close()
    print(f"load average {os.getloadavg()}")
    for mode, found in rows.items():
        med = {k: statistics.median(r[k] for r in found) for k in found[0]}
        print(f"{mode:18s} " + "  ".join(f"{k} {v:7.2f}" for k, v in med.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
