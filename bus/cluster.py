"""A JetStream cluster of nats-servers on loopback: the lab's shape on one machine (`orchestra up
--cluster 3`, the fault tests). Each node's config is rendered by bus/clusterconf.py ``node_config``, the
code that renders a lab's (`orchestra deploy render`): JetStream, authenticated routes, the bus's users,
TLS when the profile turns it on.

    cluster = LocalCluster(data_dir, size=3, auth_dir=...).start()
    cluster.urls          # every node's client URL: give all of them to every actor
    cluster.kill(1); cluster.start_node(1)   # kill -9 one node, bring it back on its ports and store

Ports are chosen free (client and route port of each node) and kept in ``<data_dir>/cluster.json``, so a
node restarted later listens where the others route to it; ``fresh_ports`` chooses new ones (`orchestra
up` does at each start: a port free last time may be taken now). ``nodes_status(data_dir)`` reads that
file and the nodes' pid files back, for `orchestra status`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import nats

from bus.clusterconf import Node, node_config
from bus.credentials import AuthDir, Credentials
from bus.server import EmbeddedNats
from schemas.config.bus import NatsTlsCfg

CLUSTER_NAME = "orchestra-local"
LAYOUT = "cluster.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClusterNode(EmbeddedNats):
    """One node: an EmbeddedNats whose config file is the lab's node config (clusterconf.node_config)."""

    def __init__(self, node: Node, nodes: list[Node], *, store_dir: Path, route: Credentials | None, **kw: Any) -> None:
        super().__init__(store_dir=store_dir, host=node.host, port=node.client_port, name=node.name, **kw)
        self.node = node
        self.nodes = nodes
        self.route = route

    def render_config(self) -> str:
        users = []
        if self.auth is not None:
            self.auth.ensure()
            users = self.auth.users()
        return node_config(
            self.node, self.nodes, cluster_name=CLUSTER_NAME, store_dir=str(self.store_dir), users=users,
            listen_host=self.node.host, max_payload=self.max_payload, route=self.route, tls=self.tls,
            extra={"pid_file": str(self.pid_path)},
        )  # fmt: skip


class LocalCluster:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        size: int = 3,
        auth_dir: str | os.PathLike[str] | None = None,
        tls: NatsTlsCfg | None = None,
        max_payload: int = 4 * 2**20,
        fresh_ports: bool = False,
    ) -> None:
        self.dir = Path(data_dir)
        self.nodes = self._nodes(size, fresh_ports)
        self.tls = tls if tls is not None and tls.enabled else None
        route = AuthDir(auth_dir).route() if auth_dir is not None else None
        self.servers = [
            ClusterNode(
                node,
                self.nodes,
                store_dir=self.dir / node.name,
                route=route,
                max_payload=max_payload,
                auth_dir=auth_dir,
                tls=self.tls,
            )  # fmt: skip
            for node in self.nodes
        ]

    def _nodes(self, size: int, fresh: bool) -> list[Node]:
        layout = self.dir / LAYOUT
        if layout.exists() and not fresh:
            saved = json.loads(layout.read_text())
            if len(saved) == size:
                return [Node(**n) for n in saved]
        nodes = [Node(f"nats-{i + 1}", "127.0.0.1", free_port(), free_port(), None) for i in range(size)]
        self.dir.mkdir(parents=True, exist_ok=True)
        layout.write_text(json.dumps([n.__dict__ for n in nodes]))
        return nodes

    @property
    def urls(self) -> list[str]:
        scheme = "tls" if self.tls else "nats"
        return [f"{scheme}://127.0.0.1:{n.client_port}" for n in self.nodes]

    def write_configs(self) -> list[Path]:
        """Every node's config file (0600), for a supervisor that runs ``nats-server --config`` itself."""
        for server in self.servers:
            server.write_config()
        return [server.config_path for server in self.servers]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for server in self.servers:
            server.start(timeout)
        return self

    async def ready(self, timeout: float = 30.0, **connect: object) -> None:
        """Until JetStream answers through the cluster (a meta leader is elected)."""
        nc = await nats.connect(servers=self.urls, **connect)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    await nc.jetstream(timeout=2).account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def start_node(self, i: int, timeout: float = 30.0) -> None:
        self.servers[i].start(timeout)

    def kill(self, i: int) -> None:
        self.servers[i].kill()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    @property
    def violations(self) -> list[str]:
        return [line for server in self.servers for line in server.violations]


def nodes_status(data_dir: str | os.PathLike[str]) -> list[dict[str, object]]:
    """The nodes of the local cluster under ``data_dir`` (none: []), each with its pid and whether that
    process is alive; read from the layout and the pid files, without the bus."""
    folder = Path(data_dir)
    try:
        saved = json.loads((folder / LAYOUT).read_text())
    except (OSError, ValueError):
        return []
    out: list[dict[str, object]] = []
    for raw in saved:
        node = Node(**raw)
        pid: int | None = None
        try:
            pid = int((folder / node.name / "nats-server.pid").read_text().strip())
            os.kill(pid, 0)
            alive = True
        except (OSError, ValueError):
            alive = False
        client, routes = f"{node.host}:{node.client_port}", f"{node.host}:{node.cluster_port}"
        out.append({"name": node.name, "client": client, "routes": routes, "pid": pid, "alive": alive})
    return out
