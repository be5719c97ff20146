"""``orchestra status``: streams, consumers, pending counts and the live state in KV (tables for people:
``status_view``; ``--json``: the raw report)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import subjects
from bus.kv import TypedKV
from cli import upcluster
from cli.common import config_of, connect_cli
from cli.restarts import read_restarts
from cli.status_view import render_status
from schemas.codec import Codec
from schemas.state import HostState, PhaseState, ProviderState, QueueState, TierState

_STATE: dict[str, Codec[Any]] = {
    subjects.KV_HOSTS: Codec(HostState),
    subjects.KV_TIERS: Codec(TierState),
    subjects.KV_PHASE: Codec(PhaseState),
    subjects.KV_PROVIDERS: Codec(ProviderState),
    subjects.KV_QUEUES: Codec(QueueState),
}


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="streams, consumers, pending work and live state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


async def collect(js: JetStreamContext) -> dict[str, Any]:
    report: dict[str, Any] = {"streams": [], "state": {}}
    for spec in subjects.STREAMS:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            report["streams"].append({"name": spec.name, "missing": True})
            continue
        consumers = []
        for c in await js.consumers_info(spec.name):
            consumers.append(
                {
                    "name": c.name,
                    "pending": c.num_pending,
                    "ack_pending": c.num_ack_pending,
                    "redelivered": c.num_redelivered,
                    "waiting": c.num_waiting,
                    "durable": bool(c.config.durable_name),  # ephemeral: CLI replays, watches
                }
            )
        st = info.state
        last = None
        if st.messages:
            try:  # the stream state has no timestamps: read the last message's
                last = (await js.get_msg(spec.name, st.last_seq)).time
            except Exception:
                last = None
        report["streams"].append(
            {
                "name": spec.name,
                "subjects": spec.subjects,
                "messages": st.messages,
                "bytes": st.bytes,
                "first_seq": st.first_seq,
                "last_seq": st.last_seq,
                "last": _ts(last),
                "consumers": consumers,
                "replicas": info.config.num_replicas,
                "leader": info.cluster.leader if info.cluster else None,
            }
        )
    for bucket, codec in _STATE.items():
        try:
            kv = await TypedKV.open(js, bucket, codec)
            report["state"][bucket] = {k: msgspec.to_builtins(v) for k, v in (await kv.items()).items()}
        except NotFoundError:
            report["state"][bucket] = None
    return report


def _ts(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return str(value)


def _version(v: Any) -> str:
    """'2.15.1', not the client's repr '<nats server v2.15.1>'."""
    try:
        return f"{v.major}.{v.minor}.{v.patch}"
    except (AttributeError, ValueError):
        return str(v).strip("<>").removeprefix("nats server v")


def _field(key: str, value: Any) -> Any:
    """Epoch seconds as UTC times (0: never), other floats rounded: a table for people."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if key.endswith(("_at", "until", "since")):
            return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") if value > 0 else "-"
        if isinstance(value, float):
            return round(value, 1)
    return value


def _print_processes(record: dict[str, Any] | None) -> None:
    if not record:
        return
    print("\nPROCESSES (orchestra up)")
    for name, p in sorted(record.get("processes", {}).items()):
        line = f"  {name}: restarts={p.get('restarts', 0)}"
        if p.get("restarts"):
            when = _field("last_restart_at", p.get("last_restart_at", 0))
            line += f" last_exit={p.get('last_exit_code')} last_restart_at={when}"
        print(line)


def cluster_nodes(data_dir: str, streams: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The local cluster's nodes (pid, alive) and the streams each one leads; None: no local cluster."""
    nodes = upcluster.status(data_dir)
    if nodes is None:
        return None
    for node in nodes:
        node["leads"] = sorted(s["name"] for s in streams if s.get("leader") == node["name"])
    return nodes


def _print_cluster(nodes: list[dict[str, Any]] | None) -> None:
    if nodes is None:
        return
    print(f"\nNATS CLUSTER (orchestra up --cluster {len(nodes)})")
    for n in nodes:
        state = "up" if n["alive"] else "DOWN"
        leads = ", ".join(n.get("leads") or []) or "-"
        print(f"  {n['name']}: {state} pid={n['pid']} client={n['client']} routes={n['routes']} leads={leads}")


async def _status(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    nc = await connect_cli(cfg)
    try:
        report = await collect(nc.jetstream())
        report["processes"] = read_restarts(cfg.data_dir)  # `orchestra up` on this machine, if any
        report["cluster"] = cluster_nodes(cfg.data_dir, report["streams"])  # `orchestra up --cluster N`
        report["server"] = {
            "url": nc.connected_url.netloc if nc.connected_url else None,
            "version": _version(nc.connected_server_version),
        }
    finally:
        await nc.close()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"NATS {report['server']['url']} (nats-server {report['server']['version']})\n")
        print("\n".join(render_status(report, datetime.now(UTC).timestamp())))
        _print_processes(report.get("processes"))
        _print_cluster(report.get("cluster"))
    return 0
