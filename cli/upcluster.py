"""``orchestra up --cluster N``: the lab's NATS shape on loopback. N nats-servers as one JetStream
cluster (bus/cluster.py LocalCluster: node configs from bus/clusterconf.py, the code behind `orchestra
deploy render`; routes authenticated, TLS with ``bus.tls``), each node its own supervised process
(``nats-1`` ... ``nats-N`` replace the Procfile's ``nats`` line, so a killed node is restarted like any
actor), streams and KV at N replicas (at most 5), every actor given all N URLs
(``ORCHESTRA_NATS_URL``, ``ORCHESTRA_NATS_REPLICAS``).

Ports are chosen free at each start (no clash with a `make run` on 4222 or another cluster); the
running cluster's URLs are kept in ``<data_dir>/up/cluster.json`` while `orchestra up` runs, so the
other `orchestra` commands find it (``discover``), and `orchestra status` shows its nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from bus.cluster import LocalCluster, nodes_status
from bus.procman import ProcLine
from bus.server import nats_server_binary
from schemas.config.root import OrchestraConfig

log = logging.getLogger(__name__)
NATS_LINE = "nats"
MAX_REPLICAS = 5  # JetStream's limit


def running_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "up" / "cluster.json"


def cluster_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "cluster"


def check_size(size: int) -> None:
    if size < 3:
        raise ValueError(f"--cluster {size}: a JetStream cluster that survives the loss of a node needs 3 or more")


def prepare(cfg: OrchestraConfig, size: int, auth_dir: Path | None) -> LocalCluster:
    """The cluster's layout (fresh free ports) and every node's config file, before anything starts."""
    check_size(size)
    cluster = LocalCluster(
        cluster_dir(cfg.data_dir), size=size, auth_dir=auth_dir, tls=cfg.bus.tls,
        max_payload=int(cfg.bus.embedded.max_payload), fresh_ports=True,
    )  # fmt: skip
    cluster.write_configs()
    return cluster


def node_lines(cluster: LocalCluster, gomaxprocs: int | None) -> list[ProcLine]:
    """One Procfile line per node: ``exec`` so the supervised PID is the nats-server itself."""
    binary = nats_server_binary()
    procs = gomaxprocs or 1  # three servers share the machine with every actor
    return [
        ProcLine(server.name, f"exec env GOMAXPROCS={procs} {binary} --config {server.config_path}")
        for server in cluster.servers
    ]


def with_nodes(lines: list[ProcLine], nodes: list[ProcLine]) -> list[ProcLine]:
    """The Procfile's lines with its ``nats`` line replaced by the nodes (first, where it was)."""
    out: list[ProcLine] = []
    for line in lines:
        out.extend(nodes if line.name == NATS_LINE else [line])
    if not any(line.name == NATS_LINE for line in lines):
        out = nodes + out
    return out


def environment(cluster: LocalCluster) -> dict[str, str]:
    return {
        "ORCHESTRA_NATS_URL": ",".join(cluster.urls),
        "ORCHESTRA_NATS_REPLICAS": str(min(len(cluster.nodes), MAX_REPLICAS)),
    }


def announce(cfg: OrchestraConfig, cluster: LocalCluster) -> None:
    path = running_path(cfg.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"pid": os.getpid(), **environment(cluster)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def withdraw(cfg: OrchestraConfig) -> None:
    with contextlib.suppress(OSError):
        running_path(cfg.data_dir).unlink()


def discover(data_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The environment of the cluster that a running `orchestra up --cluster` announced ({}: none)."""
    try:
        doc = json.loads(running_path(data_dir).read_text())
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: str(v) for k, v in doc.items() if k.startswith("ORCHESTRA_")}


def status(data_dir: str | os.PathLike[str]) -> list[dict[str, object]] | None:
    """The nodes of the running local cluster, or None when `orchestra up --cluster` is not running."""
    if not discover(data_dir):
        return None
    return nodes_status(cluster_dir(data_dir))


async def provision_when_ready(cfg: OrchestraConfig, stopping: asyncio.Event, provision: Any) -> None:
    """Create the topology at N replicas once the cluster elected a meta leader (the nodes start with
    the actors): retried every second until it succeeds or `orchestra up` stops."""
    last = ""
    while not stopping.is_set():
        try:
            await provision(cfg)
            log.info("topology provisioned at %d replicas", cfg.bus.streams.replicas)
            return
        except Exception as exc:  # no leader yet, a node still starting
            if str(exc) != last:
                log.info("provisioning waits for the cluster: %s", exc)
                last = str(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 1.0)


def reload_users(cfg: OrchestraConfig, auth_dir: Path | None) -> list[int]:
    """Rewrite every running node's config (a client added or removed) and SIGHUP it; the pids told."""
    nodes = status(cfg.data_dir)
    if not nodes:
        return []
    cluster = LocalCluster(
        cluster_dir(cfg.data_dir), size=len(nodes), auth_dir=auth_dir, tls=cfg.bus.tls,
        max_payload=int(cfg.bus.embedded.max_payload),
    )  # fmt: skip
    cluster.write_configs()
    told = []
    for node in nodes:
        if node["alive"] and isinstance(node["pid"], int):
            with contextlib.suppress(OSError):
                os.kill(node["pid"], signal.SIGHUP)
                told.append(node["pid"])
    return told
