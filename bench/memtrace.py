"""Run an actor with tracemalloc on, writing a snapshot of its Python heap every few seconds, to find
what grows with traffic (``bench/soak.py --trace ACTOR``):

    python -m bench.memtrace DIR actors.budget_guard --config ...     DIR/<n>.snap every 10 s
    (MEMTRACE_DEPTH: frames kept per allocation, 8 by default; fewer slow the actor less)

Compare two snapshots: ``tracemalloc.Snapshot.load(b).compare_to(Snapshot.load(a), "traceback")``.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

EVERY = 10.0


def _dump(out: Path) -> None:
    n = 0
    while True:
        time.sleep(EVERY)
        tracemalloc.take_snapshot().dump(str(out / f"{n:04d}.snap"))
        n += 1


def main() -> None:
    out, module = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    sys.argv = [module, *sys.argv[3:]]
    tracemalloc.start(int(os.environ.get("MEMTRACE_DEPTH", "8")))
    threading.Thread(target=_dump, args=(out,), daemon=True).start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
