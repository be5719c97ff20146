"""``orchestra status`` for people: the report of ``status.collect`` as aligned tables in human units
(sizes, "12s ago", "in 5m"), no Python reprs; ephemeral consumers (CLI replays, watches, the monitor's
start-up replays) are summed per stream instead of listed by their random names. Pure: ``now`` is given."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bus import render, subjects


def render_status(report: dict[str, Any], now: float) -> list[str]:
    out = _streams(report["streams"], now)
    state = report["state"]
    out += ["", *_hosts(state.get(subjects.KV_HOSTS) or {}, now)]
    out += _phase(state.get(subjects.KV_PHASE) or {}, now)
    out += _tiers(state.get(subjects.KV_TIERS) or {}, now)
    out += _providers(state.get(subjects.KV_PROVIDERS) or {}, now)
    out += _queues(state.get(subjects.KV_QUEUES) or {}, now)
    return out


def _split(stream: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    consumers = stream.get("consumers", [])
    return [c for c in consumers if c.get("durable", True)], [c for c in consumers if not c.get("durable", True)]


def _streams(streams: list[dict[str, Any]], now: float) -> list[str]:
    rows, consumers = [], []
    for s in streams:
        if s.get("missing"):
            rows.append([s["name"], "-", "-", "-", "not created yet (start an actor or `orchestra up`)"])
            continue
        durable, ephemeral = _split(s)
        names = ", ".join(c["name"] for c in durable) or "-"
        if ephemeral:
            names += f" + {len(ephemeral)} ephemeral"
        rows.append(
            [s["name"], f"{s['messages']:,}", render.human_bytes(s["bytes"]), _ago_iso(s.get("last"), now), names]
        )
        for c in durable:
            consumers.append([s["name"], c["name"], c["pending"], c["ack_pending"], c["redelivered"], c["waiting"]])
        if ephemeral:
            pending = sum(c["pending"] for c in ephemeral)
            unacked = sum(c["ack_pending"] for c in ephemeral)
            consumers.append([s["name"], f"({len(ephemeral)} ephemeral)", pending, unacked, "-", "-"])
    out = render.table(["STREAM", "MESSAGES", "SIZE", "LAST", "CONSUMERS"], rows, indent="")
    if consumers:
        headers = ["STREAM", "CONSUMER", "PENDING", "UNACKED", "REDELIVERED", "WAITING"]
        out += ["", *render.table(headers, consumers, indent="")]
    return out


def _ago_iso(stamp: str | None, now: float) -> str:
    if not stamp:
        return "-"
    try:
        return render.ago(datetime.fromisoformat(stamp).timestamp(), now)
    except ValueError:
        return stamp


def _hosts(hosts: dict[str, Any], now: float) -> list[str]:
    if not hosts:
        return ["HOSTS: none reported"]
    cards, models = [], []
    for name, h in sorted(hosts.items()):
        age = now - h.get("heartbeat_at", 0)
        up = "up" if h.get("up", True) and age < 30 else "DOWN"
        for c in h.get("cards") or [{"card": "-", "used_bytes": 0, "total_bytes": 0}]:
            share = f"{c['used_bytes'] / c['total_bytes']:.0%}" if c["total_bytes"] else "-"
            used = f"{render.human_bytes(c['used_bytes'])} of {render.human_bytes(c['total_bytes'])}"
            cards.append([name, up, render.ago(h.get("heartbeat_at"), now), c["card"], used, share])
        for m in h.get("models", []):
            label = m["model"] + (f"#{m['instance']}" if m.get("instance") else "")
            tier = m.get("keep_alive", "") + (" (draining)" if m.get("draining") else "")
            models.append(
                [label, name, tier, m.get("in_flight", 0), m.get("queue_depth", 0), f"{m.get('tokens_per_s', 0):.1f}",
                 render.human_bytes(m.get("bytes", 0)), render.ago(m.get("loaded_at"), now)]
            )  # fmt: skip
    out = render.table(["HOST", "STATE", "HEARTBEAT", "CARD", "MEMORY", "USED"], cards, indent="")
    if not models:
        return [*out, "", "MODELS: none loaded"]
    headers = ["MODEL", "HOST", "TIER", "IN FLIGHT", "QUEUE", "TOK/S", "SIZE", "LOADED"]
    return [*out, "", *render.table(headers, models, indent="")]


def _phase(phases: dict[str, Any], now: float) -> list[str]:
    p = phases.get("current")
    if not p:
        return []
    by = f" by {p['by']}" if p.get("by") else ""
    line = f"PHASE {p['phase']}, since {render.ago(p.get('since'), now)}{by}; {p.get('rotations', 0)} rotation(s)"
    if p.get("rotated_at"):
        line += f", the last {render.ago(p['rotated_at'], now)}"
    picks = [f"  {group}: {', '.join(models) or '-'}" for group, models in sorted((p.get("rotation") or {}).items())]
    return ["", line, *picks]


def _tiers(tiers: dict[str, Any], now: float) -> list[str]:
    if not tiers:
        return []
    rows = [
        [name, "enabled" if t.get("enabled", True) else "DISABLED", render.ago(t.get("until"), now),
         t.get("reason") or "-", render.ago(t.get("changed_at"), now)]
        for name, t in sorted(tiers.items())
    ]  # fmt: skip
    return ["", *render.table(["TIER", "STATE", "UNTIL", "REASON", "CHANGED"], rows, indent="")]


def _providers(providers: dict[str, Any], now: float) -> list[str]:
    if not providers:
        return []
    rows = []
    for name, p in sorted(providers.items()):
        cooling = [f"{m} {render.ago(t, now)}" for m, t in sorted((p.get("cooling") or {}).items()) if t > now]
        cooldown = p.get("cooldown_until") or 0.0
        rows.append(
            [name, "yes" if p.get("available", True) else "no",
             f"{p['p50_latency_ms']:.0f} ms" if p.get("p50_latency_ms") else "-", p.get("consecutive_failures", 0),
             render.ago(cooldown, now) if cooldown > now else "-", ", ".join(cooling) or "-",
             render.ago(p.get("updated_at"), now)]
        )  # fmt: skip
    headers = ["PROVIDER", "AVAILABLE", "P50", "FAILURES", "COOLDOWN", "MODELS COOLING", "UPDATED"]
    return ["", *render.table(headers, rows, indent="")]


def _queues(queues: dict[str, Any], now: float) -> list[str]:
    if not queues:
        return []
    rows = [
        [name, q.get("depth", 0), render.human_span(q.get("oldest_wait_s", 0.0)), "yes" if q.get("backlog") else "no",
         render.ago(q.get("updated_at"), now)]
        for name, q in sorted(queues.items())
    ]  # fmt: skip
    return ["", *render.table(["QUEUE", "DEPTH", "OLDEST WAIT", "BACKLOG", "UPDATED"], rows, indent="")]
