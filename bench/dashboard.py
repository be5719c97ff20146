"""What one dashboard refresh costs the diversity_monitor at lab scale, and what a page downloads:
``.venv/bin/python -m bench.dashboard [--rate 10] [--refreshes 50]``.

The lab profile's cards with three models each, 40 queues, an hour of requests and answers at ``--rate``
per second in the monitor's windows; one refresh = the /metrics figures + the page state + one chart point,
JSON-encoded (what ``dashboard_loop`` does every ``monitor.dashboard.refresh``). Also the size of
``/dashboard/state`` with a full hour of points (1800 at the default 2 s) and the event tail.
Prints a table and writes bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import statistics
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from actors.diversity_monitor.board import Board, snapshot
from actors.diversity_monitor.diversity import Answer
from actors.diversity_monitor.figures import figures
from actors.diversity_monitor.web import _dumps
from actors.diversity_monitor.window import LiveState, Observations
from schemas.config import load_config
from schemas.events import RequestRouted
from schemas.result import GenerateResult, Timings, Usage
from schemas.state import CardState, HostState, LoadedModel, QueueState

REPO = Path(__file__).resolve().parents[1]


def lab_state(now: float) -> tuple[LiveState, list[str]]:
    cfg = load_config("lab")
    local = [n for n, m in cfg.models.items() if getattr(m, "kind", "") != "cloud"]
    hosts = {}
    for i, (name, host) in enumerate(cfg.hosts.items()):
        cards = [CardState(card=c, total_bytes=24 * 10**9, used_bytes=18 * 10**9) for c in host.cards]
        models = [
            LoadedModel(model=local[(3 * i + k) % len(local)], bytes=6 * 10**9, cards=[host.cards[0]]) for k in range(3)
        ]
        hosts[name] = HostState(host=name, cards=cards, models=models, heartbeat_at=now)
    queues = {f"local:h{i}:{local[i % len(local)]}": QueueState(target=f"local:h{i}:{local[i % len(local)]}",
              depth=i % 7, updated_at=now) for i in range(40)}  # fmt: skip
    return LiveState(hosts=hosts, queues=queues), local


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second over the last hour")
    ap.add_argument("--refreshes", type=int, default=50)
    args = ap.parse_args()
    cfg = load_config("lab")
    now = time.time()
    live, local = lab_state(now)
    obs = Observations(3600, ZoneInfo("UTC"))
    n = int(args.rate * 3600)
    for i in range(n):
        at = now - 3600 + i / args.rate
        model = local[i % len(local)]
        tier = "local" if i % 10 else "together"
        r = GenerateResult(
            request_id=f"r{i}", text="x", model=model, family=model.split("-")[0], tier=tier, target="h0",
            usage=Usage(input_tokens=50, output_tokens=100), cost_usd=0.0 if tier == "local" else 1e-4,
            timings=Timings(total_ms=200.0 + i % 500),
        )  # fmt: skip
        obs.add_outcome(r, at)
    start = now - 3600
    answers = (Answer(at=start + i / args.rate, request_id=f"r{i}", model="m", family=f"f{i % 5}") for i in range(n))
    obs.store(answers)
    board = Board(1800, 200)
    for i in range(200):
        board.note(RequestRouted(request_id=f"r{i}", model="m", tier="local", target="h0"), now)  # type: ignore[arg-type]
    ticks, idle = [], []
    for _ in range(args.refreshes):
        started = time.perf_counter()
        point = board.sample(now, obs, live, None, 60.0, 3600.0)  # every refresh, watched or not
        idle.append((time.perf_counter() - started) * 1000)
        f = figures(cfg, obs, live, {}, None, [], now)  # with a page open: its state too
        state = snapshot(cfg, f, live, None, None, [], obs, board, now)
        _dumps(point)
        _dumps(state)
        ticks.append((time.perf_counter() - started) * 1000)
    rng = random.Random(1)
    while len(board.points) < 1800:  # an hour of points whose figures vary (as real ones do: gzip)
        p = board.points[-1]
        board.points.append(
            {
                k: {s: float(f"{v * rng.uniform(0.5, 1.5):.4g}") for s, v in x.items()} if isinstance(x, dict) else x
                for k, x in p.items()
            }  # fmt: skip
        )
    full = _dumps({**state, "points": list(board.points), "tail": list(board.tail)})
    out = {
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "hosts": len(live.hosts),
        "models_loaded": f.models_loaded,
        "requests_in_window": n,
        "refresh_unwatched_ms_p50": round(statistics.median(idle), 1),
        "refresh_ms_p50": round(statistics.median(ticks), 1),
        "refresh_ms_max": round(max(ticks), 1),
        "state_bytes": len(_dumps(state)),
        "point_bytes": len(_dumps(point)),
        "full_state_bytes_1h": len(full),
        "full_state_gzip_bytes_1h": len(gzip.compress(full.encode())),
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "dashboard.json").write_text(json.dumps(out, indent=1))
    for k, v in out.items():
        print(f"{k:<22} {v}")


if __name__ == "__main__":
    main()
