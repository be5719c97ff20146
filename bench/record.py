"""Where benchmark results go: ``bench/results/<name>-<local time>.json`` (git-ignored; the figures worth
keeping are quoted in docs/benchmarks.md with the machine they ran on).

    save("gateway", result)   -> the path written (and printed)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def save(stem: str, out: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {path}")
    return path
