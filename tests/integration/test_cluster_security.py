"""The local cluster's routes are the lab's: rendered by the same code, they authenticate with the route
credentials and, with ``bus.tls`` on, run over mutual TLS while clients connect over TLS. A node that
dials the cluster without the route credentials is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.cluster import CLUSTER_NAME, LocalCluster, free_port
from bus.connect import tls_context
from bus.server import EmbeddedNats
from schemas.config.bus import NatsTlsCfg
from tests.support.profile import register_server
from tests.support.tls import make_ca
from tests.support.wait import eventually


@pytest.mark.slow
async def test_a_tls_cluster_forms_with_authenticated_routes_and_refuses_a_stranger_route(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    tls = NatsTlsCfg(
        enabled=True, ca_file=str(ca.ca_file), server_cert_file=str(ca.cert_file), server_key_file=str(ca.key_file)
    )
    cluster = LocalCluster(tmp_path / "cluster", size=3, auth_dir=tmp_path / "auth", tls=tls).start()
    stranger = EmbeddedNats(
        store_dir=tmp_path / "stranger",
        name="stranger",
        cluster={  # the right TLS, the right place, no route credentials
            "name": CLUSTER_NAME, "host": "127.0.0.1", "port": free_port(),
            "routes": [f"nats-route://127.0.0.1:{cluster.nodes[0].cluster_port}"],
            "tls": {"cert_file": str(ca.cert_file), "key_file": str(ca.key_file), "ca_file": str(ca.ca_file)},
        },
    )  # fmt: skip
    try:
        for server in cluster.servers:
            register_server(server)
        assert all(url.startswith("tls://") for url in cluster.urls)
        # JetStream answers through the cluster only once its nodes routed to each other (a meta leader)
        await cluster.ready(tls=tls_context(tls), **cluster.servers[0].connect_options())
        text = cluster.servers[0].config_path.read_text()
        assert '"tls"' in text and "nats-route://orchestra-route:" in text
        stranger.start()

        def refused() -> bool:  # the node turns the route away; the stranger hears why
            node_says = any("Authentication Failure" in line for line in cluster.servers[0].log_tail(200))
            return node_says and any("Authorization Violation" in line for line in stranger.log_tail(200))

        await eventually(refused, timeout=30, interval=0.1)
    finally:
        stranger.stop()
        cluster.stop()
    assert not cluster.violations
