"""Hostile requests against the real gateway, router and cache processes (a scripted worker answers): long runs of
digits, punctuation, backticks, unicode, nesting, 1 MB+ bodies and garbage. Each gets an answer or a typed
4xx, never a 5xx, and ends (a hang detector, far above what any of them takes); an innocent client asking
meanwhile gets every answer (before the fixes, its lookups timed out while the cache chewed on dots).
Latency under attack is measured, not asserted here (a 2-vCPU shared machine makes any timing ratio flaky):
bench/hostile.py runs the same stack and docs/benchmarks.md records its p50 / p99 quiet vs per family."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from actors.gateway.offload import NICE
from bus.server import EmbeddedNats
from schemas.config import load_config
from tests.support import minilm
from tests.support.procs import ActorProcess, gateway_url
from tests.support.profile import keyed_profile
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

pytestmark = pytest.mark.slow

KEY = "sk-hostile-0123456789abcdef"
# a hang detector, not a speed test: the router stalled 9.4 s on 23,900 digits and the cache 67 s on 120 KB of
# dots (the unit tests hold each pattern to linear time on 200 KB); fixed, each of these ends in well under 1 s
BOUND_S = 45.0
MAX_BODY = 4 * 2**20
UNITS = ["7", ".", "`", "```", " ", "\n", "é", "日本", "\u200b", "\u202e", "(", "[", "{", '"', "\\", "a.", "1+",
         "<|im_start|>", "’", "🙂"]  # fmt: skip


@dataclass
class Stack:
    url: str
    headers: dict[str, str]
    gateway_pid: int


@pytest.fixture
async def stack(tmp_path: Path, nats_server: EmbeddedNats, nc: NATS) -> AsyncIterator[Stack]:
    profile = keyed_profile(
        tmp_path,
        nats_server.url,
        KEY,
        {
            "gateway": {"request_timeout": "20s"},
            "router": {"attempt_timeout": "5s"},
            "cache": {"semantic": {"model_dir": str(minilm.model_dir())}},
        },
    )
    cfg = load_config(profile)
    worker = ScriptedWorker(
        cfg,
        hosts={"cpu0": ["smollm2-135m", "gemma3-270m"]},
        providers=list(cfg.providers),
        answers={"smollm2-135m": "ok"},
    )
    await worker.start(nc)
    procs = [
        ActorProcess("actors.cache", profile).start(),
        ActorProcess("actors.router", profile).start(),
        ActorProcess("actors.gateway", profile, "--port", "0").start(),
    ]
    try:
        gateway = procs[2]
        await asyncio.to_thread(procs[0].wait_log, "cache started", 60.0)
        url = await gateway_url(gateway)
        assert gateway.proc is not None
        s = Stack(url, {"Authorization": f"Bearer {KEY}"}, gateway.proc.pid)
        async with aiohttp.ClientSession() as http:

            async def answered() -> bool:
                async with http.post(f"{s.url}/chat/completions", json=_innocent(), headers=s.headers) as r:
                    return r.status == 200

            await eventually(answered, timeout=30.0)
        yield s
    finally:
        for p in procs:
            p.stop()
        await worker.stop(grace=0.5)


def _innocent() -> dict[str, object]:
    # temperature 0: cacheable, so every innocent request also goes through the cache actor's lookup
    return {
        "model": "auto",
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }


async def _latencies(http: aiohttp.ClientSession, s: Stack, stop: asyncio.Event | None, n: int) -> list[float]:
    out: list[float] = []
    while (stop is None and len(out) < n) or (stop is not None and not stop.is_set()):
        t = time.monotonic()
        async with http.post(f"{s.url}/chat/completions", json=_innocent(), headers=s.headers) as r:
            await r.read()
            assert r.status == 200
        out.append(time.monotonic() - t)
        await asyncio.sleep(0.01)
    return out


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [0] state, [1] ppid, ..., [16] nice."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children_niceness(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(int(entry.name))
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == pid:
                found.append(int(fields[16]))
    return found


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes]:
    """(path, body): a long run of one unit in every place a client can put text, or a broken body."""
    unit = draw(st.sampled_from(UNITS))
    count = draw(st.integers(min_value=1, max_value=1_100_000 // len(unit)))
    text = unit * count
    shape = draw(st.sampled_from(["chat", "completion", "system", "stop", "nested", "raw", "oversize", "bytes"]))
    model = draw(st.sampled_from(["auto", "smollm2-135m", text[:64]]))
    if shape == "chat":  # temperature 0: the cache normalises and keys it (the path that stalled on dots)
        body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]}
        return "chat/completions", json.dumps(body).encode()
    if shape == "system":
        body = {"model": "auto", "messages": [{"role": "system", "content": text}, {"role": "user", "content": "hi"}]}
        return "chat/completions", json.dumps(body).encode()
    if shape == "completion":
        return "completions", json.dumps({"model": model, "prompt": text, "max_tokens": 4}).encode()
    if shape == "stop":
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stop": [text]}
        return "chat/completions", json.dumps(body).encode()
    depth = min(count, 200_000)
    if shape == "nested":
        nested = "[" * depth + "]" * depth
        return "chat/completions", f'{{"model":"auto","messages":[{{"role":"user","content":{nested}}}]}}'.encode()
    if shape == "raw":
        return "chat/completions", text.encode()
    if shape == "oversize":
        return "chat/completions", b'{"model":"auto","prompt":"' + b"." * (MAX_BODY + 1) + b'"}'
    return "chat/completions", bytes(range(256)) * max(1, count // 256)


def _check(url: str, headers: dict[str, str], path: str, body: bytes) -> None:
    started = time.monotonic()
    with httpx.Client(timeout=BOUND_S * 3) as http:
        r = http.post(f"{url}/{path}", content=body, headers={**headers, "Content-Type": "application/json"})
    took = time.monotonic() - started
    assert took < BOUND_S, f"{path} {len(body)} bytes took {took:.2f}s"
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        error = r.json()["error"]
        assert error["type"] in ("invalid_request_error", "authentication_error", "permission_error")
        assert "Traceback" not in error["message"] and len(error["message"]) < 2000


def _fuzz(url: str, headers: dict[str, str]) -> None:
    @settings(
        max_examples=80,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=hostile())
    def property_(case: tuple[str, bytes]) -> None:
        _check(url, headers, *case)

    property_()


async def test_hostile_requests_get_a_typed_4xx_and_every_innocent_request_is_answered(stack: Stack) -> None:
    """Every hostile request ends in an answer or a typed 4xx; the innocent client asking meanwhile gets
    every answer (200)."""
    # the shapes of the issue, always, on top of what hypothesis draws
    fixed = [
        ("chat/completions", json.dumps({"model": "auto", "messages": [{"role": "user", "content": "7" * 23_900}]})),
        ("chat/completions", json.dumps({"model": "auto", "messages": [{"role": "user", "content": "." * 120_000}]})),
        (
            "chat/completions",
            json.dumps(
                {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "." * 30_000 + "x"}]}
            ),
        ),
        ("completions", json.dumps({"model": "auto", "prompt": "x" * 1_000_001})),
        ("chat/completions", '{"model":"auto","prompt":"' + "." * (MAX_BODY + 1) + '"}'),
    ]
    async with aiohttp.ClientSession() as http:
        quiet = await _latencies(http, stack, None, 60)
        stop = asyncio.Event()
        innocent = asyncio.create_task(_latencies(http, stack, stop, 0))
        try:
            for path, body in fixed:
                await asyncio.to_thread(_check, stack.url, stack.headers, path, body.encode())
            await asyncio.to_thread(_fuzz, stack.url, stack.headers)
        finally:
            stop.set()
            busy = await innocent
    quiet_p99, busy_p99 = _p99(quiet), _p99(busy)
    print(
        f"innocent client: quiet p99 {quiet_p99 * 1000:.1f} ms (median {statistics.median(quiet) * 1000:.1f}), "
        f"under attack p99 {busy_p99 * 1000:.1f} ms over {len(busy)} requests"
    )
    assert busy  # every innocent request was answered (``_latencies`` asserts each 200)
    # the heavy bodies were parsed off the gateway's loop, in its worker process of lower CPU priority
    gateway_nice = int(_stat(stack.gateway_pid)[16])
    assert min(19, gateway_nice + NICE) in _children_niceness(stack.gateway_pid)
