"""A steady load of requests through the gateway's HTTP front door while a fault is injected, and the
tally of what came back: for the fault tests and bench/faults.py.

    load = FrontDoorLoad(url, key)
    sent = await load.run(n=60, rate=3.0, stream_every=3, before=hook)   # hook(i) before request i
    report = tally(sent, fault=(t0, t1), duplicated=...)

A streamed request is read as Server-Sent Events: its text deltas, and every typed error event; a whole
request's reply is its JSON. Each keeps the request id the gateway answered with (X-Request-Id)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Sent:
    index: int
    stream: bool
    at: float
    request_id: str = ""
    status: int = 0
    text: str = ""
    errors: list[str] = field(default_factory=list)  # typed error events (a stream) or the error body
    done: bool = False  # a stream ended with [DONE]
    finished_at: float = 0.0

    @property
    def answered(self) -> bool:
        return self.status == 200 and not self.errors and (self.done or not self.stream)


class FrontDoorLoad:
    def __init__(self, base_url: str, key: str, *, model: str = "smollm2-135m", max_tokens: int = 12) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.model, self.max_tokens = model, max_tokens

    async def one(self, session: aiohttp.ClientSession, i: int, stream: bool, timeout_s: float) -> Sent:
        sent = Sent(i, stream, time.time())
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": f"Question {i}: name a colour."}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": stream,
            "orchestra": {"timeout_s": timeout_s, "no_cache": True},
        }
        async with session.post(self.url, json=body, headers=self.headers) as r:
            sent.status, sent.request_id = r.status, r.headers.get("X-Request-Id", "")
            if not stream or r.content_type != "text/event-stream":
                doc = await r.json(content_type=None)
                if r.status == 200:
                    sent.text = doc["choices"][0]["message"]["content"] or ""
                else:
                    sent.errors.append(json.dumps(doc.get("error")))
            else:
                await _read_events(r, sent)
        sent.finished_at = time.time()
        return sent

    async def run(
        self,
        *,
        n: int,
        rate: float,
        stream_every: int = 3,
        timeout_s: float = 120.0,
        before: Callable[[int], Awaitable[None]] | None = None,
    ) -> list[Sent]:
        """``n`` requests at ``rate`` per second (every ``stream_every``-th streamed), all awaited."""
        timeout = aiohttp.ClientTimeout(total=timeout_s + 30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            start, tasks = time.monotonic(), []
            for i in range(n):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                if before is not None:
                    await before(i)
                stream = stream_every > 0 and i % stream_every == 0
                tasks.append(asyncio.ensure_future(self.one(session, i, stream, timeout_s)))
            return list(await asyncio.gather(*tasks))


async def _read_events(r: aiohttp.ClientResponse, sent: Sent) -> None:
    async for raw in r.content:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            sent.done = True
            continue
        doc = json.loads(data)
        if "error" in doc:
            sent.errors.append(json.dumps(doc["error"]))
            continue
        for choice in doc.get("choices", []):
            sent.text += (choice.get("delta") or {}).get("content") or ""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def tally(sent: list[Sent], *, fault: tuple[float, float], duplicated: int, name: str = "") -> dict[str, Any]:
    """Sent / answered / failed / duplicated, and latency (ms) overall and of requests sent during the fault."""
    lat = [(s.finished_at - s.at) * 1000 for s in sent]
    during = [(s.finished_at - s.at) * 1000 for s in sent if fault[0] <= s.at <= fault[1]]
    return {
        "fault": name,
        "sent": len(sent),
        "answered": sum(s.answered for s in sent),
        "failed": sum(not s.answered for s in sent),
        "duplicated": duplicated,
        "streamed": sum(s.stream for s in sent),
        "cut_streams": sum(s.stream and bool(s.errors) for s in sent),  # ended with one typed error
        "sent_during_fault": len(during),
        "fault_s": round(fault[1] - fault[0], 1),
        "p50_ms": round(percentile(lat, 0.5)),
        "p99_ms": round(percentile(lat, 0.99)),
        "p99_during_fault_ms": round(percentile(during, 0.99)),
    }


def record(report: dict[str, Any]) -> None:
    """Append a fault test's tally to $ORCHESTRA_FAULT_REPORT (bench/faults.py collects them), if set."""
    import os

    path = os.environ.get("ORCHESTRA_FAULT_REPORT")
    print("fault report:", json.dumps(report))
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(report) + "\n")
