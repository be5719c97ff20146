"""Run a module under an address-space limit (``python -m tests.support.limited ...``): allocations past it
fail at once (ENOMEM) instead of succeeding and waking the OOM killer. For tests of real allocation failures.

    LIMITED_MODULE=actors.gpu_host LIMITED_AS_HEADROOM=2500000000 python -m tests.support.limited --host cpu0

``LIMITED_PREIMPORT`` (comma-separated modules) are imported before the limit is measured, so the headroom
counts what the run allocates, not the libraries it maps (a finer limit: one model variant fits, another not).
"""

from __future__ import annotations

import importlib
import os
import resource
import runpy
import sys


def _vsz() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


if __name__ == "__main__":
    module = os.environ["LIMITED_MODULE"]
    headroom = int(os.environ["LIMITED_AS_HEADROOM"])
    for name in filter(None, os.environ.get("LIMITED_PREIMPORT", "").split(",")):
        importlib.import_module(name.strip())
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = _vsz() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    sys.argv = [module, *sys.argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
