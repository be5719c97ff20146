"""``orchestra up``: the embedded orchestra — the Procfile's processes (nats-server and one line per
actor) under our own supervisor (bus/procman.py): an actor that exits is restarted with backoff, each
restart is an ``actor.restarted`` event (published as the operator) and a line in
``<data_dir>/up/restarts.json``, which ``orchestra status`` shows. Only Ctrl-C or SIGTERM stops the
whole orchestra (SIGTERM to each process, SIGKILL after ``--grace``). ``--cluster 3`` runs three
nats-servers as one JetStream cluster instead of one (cli/upcluster.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bus.cluster import LocalCluster
from bus.connect import credentials_dir
from bus.credentials import AuthDir
from bus.procman import ProcessManager, ProcLine, read_procfile
from cli import upcluster
from cli.common import config_of
from cli.natscmd import provision_topology
from cli.restarts import RestartReporter, restarts_path
from schemas.config.load import REPO_CONFIGS, resolve_profile
from schemas.config.root import OrchestraConfig

REPO = REPO_CONFIGS.parent


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run the embedded orchestra (nats-server + every actor), restarting what exits")
    p.add_argument("--procfile", default=str(REPO / "Procfile"))
    p.add_argument("--backoff", type=float, default=1.0, help="first restart delay in seconds (doubles, max 30)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on shutdown")
    p.add_argument("--only", help="comma-separated process names to run (default: all)")
    p.add_argument("--print", action="store_true", dest="dry_run", help="print the processes and exit")
    p.add_argument(
        "--cluster",
        type=int,
        metavar="N",
        help="N nats-servers as one JetStream cluster on loopback (3: a lab's shape)",
    )
    p.set_defaults(run=run)


def processes(procfile: Path) -> list[str]:
    return [line.name for line in read_procfile(procfile)]


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)  # refuse to start on a broken config
    procfile = Path(args.procfile).resolve()
    lines = read_procfile(procfile)
    if not cfg.bus.embedded.enabled and not args.cluster:
        lines = [line for line in lines if line.name != "nats"]  # a real lab points at its NATS cluster
    folder = credentials_dir(cfg.bus, cfg.data_dir)
    if folder is not None and (cfg.bus.embedded.enabled or args.cluster) and not args.dry_run:
        made = AuthDir(folder).ensure()  # before any process starts: each finds its own credentials
        if made:
            print(f"orchestra: NATS credentials for {len(made)} roles written to {folder} (0600)", file=sys.stderr)
    cluster = None
    if args.cluster and args.dry_run:
        upcluster.check_size(args.cluster)
        nodes = [ProcLine(f"nats-{i + 1}", "nats-server") for i in range(args.cluster)]
        lines = upcluster.with_nodes(lines, nodes)  # nothing written: only what would run
    elif args.cluster:
        cluster = upcluster.prepare(cfg, args.cluster, folder)
        lines = upcluster.with_nodes(lines, upcluster.node_lines(cluster, cfg.bus.embedded.gomaxprocs))
        os.environ.update(upcluster.environment(cluster))  # the actors, the CLI, this supervisor
        cfg = config_of(args)
    lines = _only(lines, args.only, procfile)
    names = [line.name for line in lines]
    env = dict(os.environ)
    env["ORCHESTRA_CONFIG"] = str(resolve_profile(args.config).resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")  # `orchestra` and `python` of this venv
    if args.dry_run:
        print(f"profile {cfg.profile} ({env['ORCHESTRA_CONFIG']}): {', '.join(names)}")
        return 0
    if cluster is not None:
        print(f"NATS cluster of {len(cluster.nodes)}: {', '.join(cluster.urls)}", flush=True)
    mon = cfg.monitor
    if "diversity_monitor" in names and mon.dashboard.enabled and mon.metrics_port:
        print(f"dashboard: http://{mon.metrics_host}:{mon.metrics_port}/dashboard (once the monitor is up)", flush=True)
    reporter = RestartReporter(cfg, restarts_path(cfg.data_dir), names)
    return asyncio.run(_supervise(lines, env, procfile.parent, reporter, args, cfg if cluster else None, cluster))


def _only(lines: list[ProcLine], only: str | None, procfile: Path) -> list[ProcLine]:
    """``--only a,b``: those lines (``nats`` names every node of a cluster)."""
    if not only:
        return lines
    wanted = {n.strip() for n in only.split(",") if n.strip()}
    names = [line.name for line in lines]
    unknown = sorted(
        w for w in wanted if w not in names and not (w == "nats" and any(n.startswith("nats-") for n in names))
    )
    if unknown:
        raise ValueError(f"no such process in {procfile}: {', '.join(unknown)} (have: {', '.join(names)})")
    return [line for line in lines if line.name in wanted or ("nats" in wanted and line.name.startswith("nats-"))]


async def _supervise(
    lines: list[ProcLine],
    env: dict[str, str],
    cwd: Path,
    reporter: RestartReporter,
    args: Any,
    cluster_cfg: OrchestraConfig | None,
    cluster: LocalCluster | None,
) -> int:
    manager = ProcessManager(
        lines, env=env, cwd=cwd, on_restart=reporter.report, backoff=args.backoff, grace=args.grace
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, manager.stop)
    provisioning = None
    if cluster_cfg is not None and cluster is not None:
        upcluster.announce(cluster_cfg, cluster)
        provisioning = asyncio.create_task(
            upcluster.provision_when_ready(cluster_cfg, manager.stopping, provision_topology)
        )
    try:
        return await manager.run()
    finally:
        if provisioning is not None:
            provisioning.cancel()
            await asyncio.gather(provisioning, return_exceptions=True)
        if cluster_cfg is not None:
            upcluster.withdraw(cluster_cfg)
        await reporter.close()
