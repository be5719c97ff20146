"""The gateway paces heavy requests (bus/pacer.py Pacer) against the real stack: while a light request is
in flight, a heavy one waits (here: its paced moment is hours away), other light requests pass it; once
the light traffic ends, it runs. Ordering by events (the scripted worker holds the light request until
the test releases it), never by time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from bus.server import EmbeddedNats
from schemas.config import load_config
from tests.support.procs import ActorProcess, gateway_url
from tests.support.profile import keyed_profile
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

pytestmark = pytest.mark.slow

KEY = "sk-pacing-0123456789abcdef"
HEAVY = "long prompt " * 200  # 2,400 characters: over heavy_prompt (1,024), a body far under heavy_body


@dataclass
class Stack:
    url: str
    headers: dict[str, str]
    worker: ScriptedWorker


@pytest.fixture
async def stack(tmp_path: Path, nats_server: EmbeddedNats, nc: NATS) -> AsyncIterator[Stack]:
    profile = keyed_profile(
        tmp_path,
        nats_server.url,
        KEY,
        {
            "gateway": {
                "request_timeout": "120s",
                "heavy_prompt": 1024,
                "heavy_share": 0.000001,  # after a heavy request the next waits ~10^6 x its time while light is around
            },
            "router": {"attempt_timeout": "120s"},
            "cache": {"enabled": False},
        },
    )
    cfg = load_config(profile)
    worker = ScriptedWorker(
        cfg,
        hosts={"cpu0": ["smollm2-135m", "gemma3-270m"]},
        providers=list(cfg.providers),
        script={"*": ["hold", "ok"]},  # the first dispatch waits for worker.released, the rest answer at once
    )
    await worker.start(nc)
    procs = [
        ActorProcess("actors.router", profile).start(),
        ActorProcess("actors.gateway", profile, "--port", "0").start(),
    ]
    try:
        yield Stack(await gateway_url(procs[1]), {"Authorization": f"Bearer {KEY}"}, worker)
    finally:
        for p in procs:
            p.stop()
        worker.released.set()
        await worker.stop(grace=0.5)


def _chat(text: str) -> dict[str, object]:
    return {"model": "smollm2-135m", "temperature": 0.7, "messages": [{"role": "user", "content": text}]}


async def _ask(http: aiohttp.ClientSession, s: Stack, text: str) -> int:
    async with http.post(f"{s.url}/chat/completions", json=_chat(text), headers=s.headers) as r:
        await r.read()
        return r.status


async def test_a_heavy_request_waits_while_a_light_one_is_in_flight_and_runs_once_none_is(stack: Stack) -> None:
    """A light request held by the worker; a first heavy one runs at once (nothing heavy ran yet); a
    second heavy one waits while a later light one is answered; released, the light traffic ends and the
    waiting heavy request is answered."""
    s = stack
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=100)) as http:
        held = asyncio.create_task(_ask(http, s, "a light question held by the worker"))
        await eventually(lambda: len(s.worker.seen) == 1, timeout=30.0)
        assert await _ask(http, s, HEAVY) == 200  # light traffic around, but no heavy one ran before it
        waiting = asyncio.create_task(_ask(http, s, "second " + HEAVY))
        assert await _ask(http, s, "another light question") == 200
        assert not waiting.done() and len(s.worker.seen) == 3  # held, the first heavy, the second light one
        s.worker.released.set()
        assert await held == 200
        assert await waiting == 200  # the light traffic ended: the heavy request ran, hours before its time
        assert len(s.worker.seen) == 4
