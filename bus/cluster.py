"""A JetStream cluster of nats-servers on loopback: the lab's shape on one machine (`orchestra up
--cluster 3`, the fault tests). Node configs come from bus/clusterconf.py, as a lab's do.

    cluster = LocalCluster(data_dir, size=3, auth_dir=...).start()
    cluster.urls          # every node's client URL: give all of them to every actor
    cluster.kill(1); cluster.start_node(1)   # kill -9 one node, bring it back on its ports and store

Ports are chosen free once (client and route port of each node) and kept in ``<data_dir>/cluster.json``,
so a node restarted later listens where the others route to it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import nats

from bus.clusterconf import Node, cluster_block
from bus.server import EmbeddedNats

CLUSTER_NAME = "orchestra-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        size: int = 3,
        auth_dir: str | os.PathLike[str] | None = None,
        max_payload: int = 4 * 2**20,
    ) -> None:
        self.dir = Path(data_dir)
        self.nodes = self._nodes(size)
        self.servers = [
            EmbeddedNats(
                store_dir=self.dir / node.name,
                host="127.0.0.1",
                port=node.client_port,
                name=node.name,
                max_payload=max_payload,
                auth_dir=auth_dir,
                cluster=cluster_block(node, self.nodes, name=CLUSTER_NAME, listen_host="127.0.0.1"),
            )
            for node in self.nodes
        ]

    def _nodes(self, size: int) -> list[Node]:
        layout = self.dir / "cluster.json"
        if layout.exists():
            saved = json.loads(layout.read_text())
            if len(saved) == size:
                return [Node(**n) for n in saved]
        nodes = [Node(f"nats-{i + 1}", "127.0.0.1", free_port(), free_port(), None) for i in range(size)]
        self.dir.mkdir(parents=True, exist_ok=True)
        layout.write_text(json.dumps([n.__dict__ for n in nodes]))
        return nodes

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{n.client_port}" for n in self.nodes]

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
