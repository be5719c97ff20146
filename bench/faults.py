"""Faults injected under load, each one the fault test that runs it in `make test`, tallied as one table:
requests sent / answered / failed / duplicated and the latency (p99) of the requests that met the fault.

    .venv/bin/python -m bench.faults [--runs 1] [--only cluster,bus,gpu_host]

Each test appends its tally (tests/support/faultload.py ``record``) to a file named by
$ORCHESTRA_FAULT_REPORT; this script runs them with pytest, reads the tallies back, prints a Markdown
table (the one in docs/benchmarks.md) and writes bench/results/faults-<time>.json.

- cluster: tests/integration/test_cluster_faults.py — 3 nats-servers, kill -9 of the node the router and
  the worker use, 200 requests at 40/s (a scripted worker answering after 0.2 s).
- bus: tests/integration/test_bus_outage.py — the single nats-server killed for 7 s and restarted on its
  store, 12 requests of 10 s in flight.
- gpu_host: tests/integration/test_gpu_host_fault.py — real llama.cpp (SmolLM2-135M) behind the gateway's
  HTTP front door, 45 requests at 3/s (a third streamed); the gpu_host killed (-9) while generating, kept
  down until the router judges it dead, then restarted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TESTS = {
    "cluster": "tests/integration/test_cluster_faults.py",
    "bus": "tests/integration/test_bus_outage.py::test_a_bus_outage_longer_than_the_heartbeat_limit_fails_no_request",
    "gpu_host": "tests/integration/test_gpu_host_fault.py",
}
# failed counts every request that did not get its whole answer; cut_streams, those of them that were
# streams ended with one typed error ("the answer was cut") because the host died mid-answer
COLUMNS = ("sent", "answered", "failed", "cut_streams", "duplicated", "p50_ms", "p99_ms", "p99_during_fault_ms")


def run_one(test: str, report: Path) -> int:
    env = {**os.environ, "ORCHESTRA_FAULT_REPORT": str(report), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    return subprocess.run(cmd, cwd=REPO, env=env, timeout=900).returncode


def table(rows: list[dict[str, object]]) -> str:
    head = "| fault | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for r in rows:
        lines.append(f"| {r['fault']} | " + " | ".join(str(r.get(c, "-")) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", help="comma-separated: " + ",".join(TESTS))
    args = parser.parse_args()
    chosen = [t.strip() for t in args.only.split(",")] if args.only else list(TESTS)
    rows: list[dict[str, object]] = []
    codes: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        for _ in range(args.runs):
            for name in chosen:
                codes.setdefault(name, []).append(run_one(TESTS[name], report))
        if report.exists():
            rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    print(table(rows))
    print(f"\npytest exit codes: {codes}  ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"faults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rows": rows, "exit_codes": codes}, indent=2))
    print(f"written to {out.relative_to(REPO)}")
    return 0 if all(c == 0 for cs in codes.values() for c in cs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
