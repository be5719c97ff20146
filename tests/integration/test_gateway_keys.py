"""Per-key policy through the real gateway and router (the worker is scripted): a key restricted to
Gemma never gets SmolLM2 through auto, a family, diverse or a named model; rates, concurrency, fan-out and
deadline limits hold, and the request counts are shared by two gateway instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from nats.aio.client import Client as NATS

from actors.gateway.actor import Gateway
from actors.router.actor import Router
from bus.consumer import Delivery
from bus.server import EmbeddedNats
from schemas.codec import DISPATCH
from schemas.config import OrchestraConfig
from tests.support.profile import test_config
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

GEMMA_KEY = "sk-gemma-only-0123456789"
RATED_KEY = "sk-rated-0123456789abcd"
FLOOD_KEY = "sk-flood-0123456789abcd"
LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}
Start = Callable[..., Awaitable[list[Gateway]]]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def kcfg(tmp_path: Path, nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> OrchestraConfig:
    monkeypatch.setenv("TEST_GEMMA_KEY", GEMMA_KEY)
    monkeypatch.setenv("TEST_RATED_KEY", RATED_KEY)
    monkeypatch.setenv("TEST_FLOOD_KEY", FLOOD_KEY)
    (tmp_path / "data").mkdir()
    return test_config(
        tmp_path / "profile",
        nats_server.url,
        data_dir=tmp_path / "data",
        overrides={
            "gateway": {
                "port": 0,
                "request_timeout": "20s",
                "api_keys_file": None,
                "api_keys": [
                    {"id": "gemma-only", "secret": {"env": "TEST_GEMMA_KEY"}, "models": ["gemma3-270m"]},
                    {
                        "id": "rated",
                        "secret": {"env": "TEST_RATED_KEY"},
                        "limits": {"rpm": 3, "concurrent": 1, "max_fanout": 2, "max_timeout": "60s"},
                    },
                    {"id": "flood", "secret": {"env": "TEST_FLOOD_KEY"}},
                ],
            },
            "router": {"attempt_timeout": "5s"},
        },
    )


@pytest.fixture
async def start(kcfg: OrchestraConfig, nc: NATS) -> AsyncIterator[Start]:
    actors: list[Any] = []

    async def go(gateways: int = 1, worker: ScriptedWorker | None = None, **gateway: Any) -> list[Gateway]:
        cfg = msgspec.structs.replace(kcfg, gateway=msgspec.structs.replace(kcfg.gateway, **gateway))
        w = worker or ScriptedWorker(kcfg, hosts=LOCAL)
        router = Router(kcfg, instance="keys-router")
        gws = [Gateway(cfg, port=0, instance=f"keys-gw{i}") for i in range(gateways)]
        for actor in (w, router, *gws):
            await actor.start(nc)
            actors.append(actor)
        await eventually(lambda: router.view.hosts.data)
        return gws

    yield go
    for actor in reversed(actors):
        await actor.stop(grace=0.5)


def sdk(gw: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"http://127.0.0.1:{gw.bound_port}/v1", max_retries=0)


async def test_a_gemma_only_key_never_gets_smollm2(start: Start) -> None:
    """auto answers from Gemma; auto + family smollm is a 403; diverse answers come from Gemma only; the
    named SmolLM2 does not exist for this key."""
    (gw,) = await start()
    client = sdk(gw, GEMMA_KEY)
    try:
        reply = await client.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
        assert reply.model == "gemma3-270m"
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(
                model="auto",
                messages=HI,
                extra_body={"orchestra": {"family": "smollm"}},  # type: ignore[arg-type]
            )
        diverse = await client.chat.completions.create(model="diverse", messages=HI, n=3)  # type: ignore[arg-type]
        models = {r["provenance"]["model"] for r in (diverse.model_extra or {})["orchestra"]["responses"]}
        assert models == {"gemma3-270m"}
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="smollm2-135m", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError) as ensemble:  # an ensemble needs two models it may use
            await client.chat.completions.create(model="ensemble", messages=HI)  # type: ignore[arg-type]
        assert ensemble.value.status_code in (403, 503)
    finally:
        await client.close()


async def test_rpm_is_shared_by_two_gateway_instances(start: Start) -> None:
    """3 requests a minute: two through one gateway, one through the other, the fourth is a 429 anywhere."""
    gws = await start(gateways=2)
    a, b = sdk(gws[0], RATED_KEY), sdk(gws[1], RATED_KEY)
    try:
        for client in (a, b, a):
            await client.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            await b.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
        assert "per minute" in limited.value.message
        assert int(limited.value.response.headers["Retry-After"]) >= 1
        # refused again without its body being read (a junk body would be a 400): the key's next requests
        # this minute cost that gateway a header check, not a decode and a KV round trip
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{gws[1].bound_port}/v1/chat/completions",
                data=b"{not json" * 1000,
                headers={"Authorization": f"Bearer {RATED_KEY}", "Content-Type": "application/json"},
            ) as again:
                assert again.status == 429 and "per minute" in (await again.json())["error"]["message"]
                assert int(again.headers["Retry-After"]) >= 1
    finally:
        await a.close()
        await b.close()


async def test_concurrency_fanout_and_deadline_limits(start: Start, kcfg: OrchestraConfig) -> None:
    """One request in flight at a time; at most 2 answers; deadlines up to 60 s."""
    (gw,) = await start(worker=ScriptedWorker(kcfg, hosts=LOCAL, script={"*": ["hang", "ok"]}))
    client = sdk(gw, RATED_KEY)
    try:
        with pytest.raises(openai.PermissionDeniedError) as wide:
            await client.chat.completions.create(model="diverse", messages=HI, n=4)  # type: ignore[arg-type]
        assert wide.value.body["param"] == "n"  # type: ignore[index]
        with pytest.raises(openai.PermissionDeniedError) as long:
            await client.chat.completions.create(
                model="auto",
                messages=HI,
                extra_body={"orchestra": {"timeout_s": 3600}},  # type: ignore[arg-type]
            )
        assert long.value.body["param"] == "orchestra.timeout_s"  # type: ignore[index]
        first = asyncio.create_task(
            client.chat.completions.create(
                model="auto",
                messages=HI,
                extra_body={"orchestra": {"timeout_s": 1}},  # type: ignore[arg-type]
            )
        )
        await eventually(lambda: gw.limiter is not None and first.done() is False and _inflight(gw))
        with pytest.raises(openai.RateLimitError) as busy:
            await client.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
        assert "in flight" in busy.value.message
        with pytest.raises(openai.APIStatusError):
            await first  # the hung attempt times out: its slot is released
        reply = await client.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
        assert reply.choices[0].message.content
    finally:
        await client.close()


class HoldingWorker(ScriptedWorker):
    """Holds every dispatch to ``model`` until the test releases it (oldest first), so the test decides
    when a gateway slot frees instead of sleeping."""

    def __init__(self, cfg: OrchestraConfig, model: str) -> None:
        super().__init__(cfg, hosts=LOCAL)
        self.model = model
        self.held: list[asyncio.Event] = []
        self.open = False  # set at the end: nothing is held any more

    async def handle(self, delivery: Delivery) -> None:
        if DISPATCH.decode(delivery.data).target.model == self.model and not self.open:
            gate = asyncio.Event()
            self.held.append(gate)
            await gate.wait()
        await super().handle(delivery)

    def release_all(self) -> None:
        self.open = True
        for gate in self.held:
            gate.set()


async def test_a_flooding_key_does_not_starve_another_keys_request(start: Start, kcfg: OrchestraConfig) -> None:
    """Two gateway slots, both held by a flooding key, four more of its requests waiting: another key's
    request gets the second slot that frees (the keys take turns), not the fifth; a flood request beyond
    the key's waiting bound is refused with a 429 before its body is read."""
    worker = HoldingWorker(kcfg, "smollm2-135m")
    (gw,) = await start(worker=worker, slots=2, max_waiting=4)
    flood, innocent = sdk(gw, FLOOD_KEY), sdk(gw, GEMMA_KEY)
    ask = [{"role": "user", "content": "flood"}]
    floods: list[asyncio.Task[Any]] = []
    try:
        for _ in range(6):
            call = flood.chat.completions.create(model="smollm2-135m", messages=ask)  # type: ignore[arg-type]
            floods.append(asyncio.create_task(call))
        await eventually(lambda: len(worker.held) == 2 and gw.fair.queue.waiting("flood") == 4)
        async with aiohttp.ClientSession() as http:  # the key's share of the queue is full: refused unread
            async with http.post(
                f"http://127.0.0.1:{gw.bound_port}/v1/chat/completions", data=b"{not json" * 1000,
                headers={"Authorization": f"Bearer {FLOOD_KEY}", "Content-Type": "application/json"},
            ) as refused:  # fmt: skip
                assert refused.status == 429 and "waiting" in (await refused.json())["error"]["message"]
        mine = asyncio.create_task(innocent.chat.completions.create(model="auto", messages=HI))  # type: ignore[arg-type]
        await eventually(lambda: gw.fair.queue.waiting("gemma-only") == 1)
        worker.held[0].set()  # the first slot frees: the flood's turn (it was waiting first)
        await eventually(lambda: len(worker.held) == 3)
        assert gw.fair.queue.waiting("gemma-only") == 1 and gw.fair.queue.waiting("flood") == 3
        worker.held[1].set()  # the second: the other key's turn, ahead of the flood's three still waiting
        reply = await mine
        assert reply.model == "gemma3-270m" and reply.choices[0].message.content
        assert gw.fair.queue.waiting("flood") >= 2 and sum(not f.done() for f in floods) >= 3
    finally:
        worker.release_all()
        results = await asyncio.gather(*floods, return_exceptions=True)
        await flood.close()
        await innocent.close()
    assert all(not isinstance(r, BaseException) for r in results)  # the flood is served too, in its turns


async def _inflight(gw: Gateway) -> bool:
    assert gw.limiter is not None
    usage, _ = await gw.limiter._read("rated")
    return usage is not None and sum(usage.inflight.values()) == 1
