"""``orchestra up``: the embedded orchestra — the Procfile's processes (nats-server and one line per
actor) run by honcho. Ctrl-C stops them all (SIGTERM; honcho kills what is left after 5 s)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from bus.cli.common import config_of
from bus.connect import credentials_dir
from bus.credentials import AuthDir
from schemas.config.load import REPO_CONFIGS, resolve_profile

REPO = REPO_CONFIGS.parent
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run the embedded orchestra (nats-server + every actor) with honcho")
    p.add_argument("--procfile", default=str(REPO / "Procfile"))
    p.add_argument("--only", help="comma-separated process names to run (default: all)")
    p.add_argument("--print", action="store_true", dest="dry_run", help="print the processes and exit")
    p.set_defaults(run=run)


def processes(procfile: Path) -> list[str]:
    names = []
    for raw in procfile.read_text().splitlines():
        m = _LINE.match(raw.strip())
        if m and not raw.lstrip().startswith("#"):
            names.append(m.group(1))
    return names


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)  # refuse to start on a broken config
    procfile = Path(args.procfile).resolve()
    names = processes(procfile)
    if not cfg.bus.embedded.enabled:
        names = [n for n in names if n != "nats"]  # a real lab points at its NATS cluster
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"no such process in {procfile}: {', '.join(unknown)} (have: {', '.join(names)})")
        names = wanted
    folder = credentials_dir(cfg.bus, cfg.data_dir)
    if folder is not None and cfg.bus.embedded.enabled and not args.dry_run:
        made = AuthDir(folder).ensure()  # before any process starts: each finds its own credentials
        if made:
            print(f"orchestra: NATS credentials for {len(made)} roles written to {folder} (0600)", file=sys.stderr)
    env = dict(os.environ)
    env["ORCHESTRA_CONFIG"] = str(resolve_profile(args.config).resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")  # `orchestra` and `python` of this venv
    if args.dry_run:
        print(f"profile {cfg.profile} ({env['ORCHESTRA_CONFIG']}): {', '.join(names)}")
        return 0
    mon = cfg.monitor
    if "diversity_monitor" in names and mon.dashboard.enabled and mon.metrics_port:
        print(f"dashboard: http://{mon.metrics_host}:{mon.metrics_port}/dashboard (once the monitor is up)", flush=True)
    honcho = shutil.which("honcho", path=venv_bin) or "honcho"
    os.execvpe(honcho, [honcho, "start", "-f", str(procfile), "-d", str(procfile.parent), *names], env)
    return 0  # not reached
