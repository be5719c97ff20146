"""A NATS JetStream cluster's node configs, from one function: the lab's three nodes (`orchestra deploy
render`) and the local loopback cluster (`orchestra up --cluster 3`, tests) are rendered by the same code.

    node_config(me, nodes, cluster_name=..., store_dir=..., users=..., route=..., tls=...)  -> config text

Routes between the nodes authenticate: every node accepts a route only with the cluster's route
credentials (``route``: ``AuthDir.route()``, one secret shared by the nodes, never a role's) and dials the
others with them. With ``tls`` (the profile's ``bus.tls``) clients connect over TLS (mutual with
``verify_clients``) and routes run over mutual TLS too: each node presents its server certificate, which
the CA must sign for both server and client use (no extendedKeyUsage, or both).

The text is nats-server's config syntax written as ``key: <json>`` lines (JSON is valid there), so a
test can parse it back; ``nats-server -t -c <file>`` validates it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlparse

from bus.credentials import Credentials, User, authorization_block
from schemas.config.bus import NatsTlsCfg


@dataclass(frozen=True)
class Node:
    name: str
    host: str  # where clients and the other nodes reach it
    client_port: int = 4222
    cluster_port: int = 6222
    http_port: int | None = 8222  # monitoring (/healthz, /jsz); None: off


def nodes_of(servers: list[str], *, cluster_port: int = 6222, http_port: int | None = 8222) -> list[Node]:
    """The nodes behind a profile's ``bus.servers`` (nats://nats-1.lab:4222 -> node nats-1)."""
    found = []
    for url in servers:
        parsed = urlparse(url)
        host = parsed.hostname or "localhost"
        found.append(Node(host.split(".")[0], host, parsed.port or 4222, cluster_port, http_port))
    return found


def cluster_block(
    me: Node,
    nodes: list[Node],
    *,
    name: str,
    listen_host: str,
    all_routes: bool = False,
    route: Credentials | None = None,
    tls: NatsTlsCfg | None = None,
) -> dict[str, object]:
    """``all_routes``: a route to every node, itself included (one config shared by every pod; a node
    skips the route to itself). ``route``: the credentials every route must present (and dials with)."""
    login = f"{route.user}:{route.password}@" if route is not None else ""
    block: dict[str, object] = {
        "name": name,
        "host": listen_host,
        "port": me.cluster_port,
        "routes": [f"nats-route://{login}{n.host}:{n.cluster_port}" for n in nodes if all_routes or n != me],
    }
    if route is not None:
        block["authorization"] = {"user": route.user, "password": route.password, "timeout": 2}
    if tls is not None and tls.enabled:
        block["tls"] = {**tls_block(tls), "verify": True}  # routes: mutual TLS, always
    return block


def tls_block(tls: NatsTlsCfg) -> dict[str, object]:
    """The server side of ``bus.tls``: its certificate and key, the CA, ``verify`` for mutual TLS."""
    block: dict[str, object] = {"cert_file": tls.server_cert_file, "key_file": tls.server_key_file}
    if tls.ca_file:
        block["ca_file"] = tls.ca_file
    if tls.verify_clients:
        block["verify"] = True
    return block


def node_config(
    me: Node,
    nodes: list[Node],
    *,
    cluster_name: str,
    store_dir: str,
    users: list[User],
    listen_host: str = "0.0.0.0",
    max_payload: int = 4 * 2**20,
    max_file_store: int | None = None,
    extra: dict[str, object] | None = None,
    all_routes: bool = False,
    route: Credentials | None = None,
    tls: NatsTlsCfg | None = None,
) -> str:
    jetstream: dict[str, object] = {"store_dir": store_dir}
    if max_file_store:
        jetstream["max_file_store"] = max_file_store
    settings: dict[str, object] = {
        "server_name": me.name,
        "host": listen_host,
        "port": me.client_port,
        "max_payload": max_payload,
        "jetstream": jetstream,
    }
    if me.http_port is not None:
        settings["http_port"] = me.http_port
    if len(nodes) > 1:
        settings["cluster"] = cluster_block(
            me, nodes, name=cluster_name, listen_host=listen_host, all_routes=all_routes, route=route, tls=tls
        )
    if tls is not None and tls.enabled:
        settings["tls"] = tls_block(tls)
    settings.update(extra or {})
    if users:
        settings["authorization"] = authorization_block(users)
    return "".join(
        f"{key}: {json.dumps(value, indent=1 if key == 'authorization' else None)}\n" for key, value in settings.items()
    )


def parse(text: str) -> dict[str, object]:
    """A config rendered by ``node_config`` (or EmbeddedNats) read back: ``key: <json>`` blocks."""
    out: dict[str, object] = {}
    key, buf = None, ""
    for line in text.splitlines():
        if line and not line[0].isspace() and ": " in line and line[0] not in "}]":
            if key is not None:
                out[key] = json.loads(buf)
            key, buf = line.split(": ", 1)[0], line.split(": ", 1)[1]
        else:
            buf += "\n" + line
    if key is not None:
        out[key] = json.loads(buf)
    return out
