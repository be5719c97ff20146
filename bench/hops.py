"""Where each millisecond of a request goes, from the client's clock and the server's stored timestamps
(one machine, one clock): for a sample of requests sent through the gateway,

    gateway in   client sends  -> its GenerateRequest stored in REQUESTS   (HTTP, parse, keys, publish)
    router       REQUESTS      -> its Dispatch stored in DISPATCH          (pull, route, budget reservation;
                                                                         a cache hit: up to its result)
    worker       DISPATCH      -> its result stored in RESULTS             (pull, provider call, backend)
    gateway out  RESULTS       -> the client has the response              (delivery, HTTP response)

Used by bench/gateway.py: ``Trace`` notes (sent, received, request id) per cell; ``hop_table`` reads the
three streams back as the operator and gives the median of each hop per cell.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bus import subjects
from bus.replay import replay
from cli.common import connect_cli
from schemas.codec import DISPATCH
from schemas.config import load_config
from schemas.errors import SchemaError

HOPS = ("gateway_in", "router", "worker", "gateway_out")


@dataclass
class Trace:
    """Requests sampled in one cell: (sent, received, request id), wall-clock seconds."""

    limit: int = 300
    seen: list[tuple[float, float, str]] = field(default_factory=list)

    def note(self, sent: float, received: float, response_id: str) -> None:
        if len(self.seen) < self.limit and "-" in response_id:
            self.seen.append((sent, received, response_id.split("-", 1)[1]))


async def stored_times(profile: str, since: float, until: float) -> dict[str, dict[str, float]]:
    """request id -> {"request", "dispatch", "result"}: when each was stored (the first dispatch)."""
    cfg = load_config(profile)
    nc = await connect_cli(cfg)
    out: dict[str, dict[str, float]] = {}
    try:
        start = datetime.fromtimestamp(since, UTC) - timedelta(seconds=1)
        end = datetime.fromtimestamp(until, UTC) + timedelta(seconds=5)
        filters = [subjects.REQUEST_ALL, subjects.DISPATCH_ALL, subjects.RESULT_ALL]
        for when, _seq, _stream, subject, data in await replay(nc.jetstream(), filters, start, end):
            at = when.timestamp()
            if (req := subjects.parse_request(subject)) is not None:
                out.setdefault(req.request_id, {}).setdefault("request", at)
            elif (ans := subjects.parse_answer(subject)) is not None and ans.kind == "result":
                out.setdefault(ans.request_id, {}).setdefault("result", at)
            elif subject.startswith(f"{subjects.PREFIX}.dispatch."):
                try:
                    rid = DISPATCH.decode(data).request.id
                except SchemaError:
                    continue
                out.setdefault(rid, {}).setdefault("dispatch", at)
    finally:
        await nc.close()
    return out


async def hop_table(profile: str, traces: dict[str, Trace]) -> dict[str, dict[str, float]]:
    """cell -> hop -> median ms (and ``n``, the requests matched)."""
    everything = [t for tr in traces.values() for t in tr.seen]
    if not everything:
        return {}
    stored = await stored_times(profile, min(t[0] for t in everything), max(t[1] for t in everything))
    table: dict[str, dict[str, float]] = {}
    for cell, tr in traces.items():
        hops: dict[str, list[float]] = {h: [] for h in HOPS}
        for sent, received, rid in tr.seen:
            s = stored.get(rid, {})
            if not {"request", "result"} <= s.keys():
                continue
            s.setdefault("dispatch", s["result"])  # a cache hit: answered by the router, no dispatch
            hops["gateway_in"].append((s["request"] - sent) * 1000)
            hops["router"].append((s["dispatch"] - s["request"]) * 1000)
            hops["worker"].append((s["result"] - s["dispatch"]) * 1000)
            hops["gateway_out"].append((received - s["result"]) * 1000)
        n = len(hops["router"])
        if n:
            table[cell] = {h: round(statistics.median(v), 2) for h, v in hops.items()} | {"n": float(n)}
    return table
