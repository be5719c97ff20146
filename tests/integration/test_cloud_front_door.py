"""The front door to the cloud tiers through the official openai SDK, on real processes (gateway, router,
cloud_proxy, budget_guard; a nats-server with auth and permissions) and local servers that speak the
providers' wire formats: cloud embedding models (OpenAI-compatible and Gemini; Anthropic refused by name),
held and charged through the budget_guard; function calls streamed as deltas from each provider."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import openai
import pytest

from bus.server import EmbeddedNats
from schemas.budget import LedgerSummary
from tests.support.budget import summary
from tests.support.cloud import FakeProvider, free_port, vector_of
from tests.support.procs import ActorProcess
from tests.support.profile import register_server, write_profile

pytestmark = pytest.mark.slow
KEY, CAPPED = "sk-cloud-door-0b7e4d2a91", "sk-cloud-capped-5f3c8e1a77"
PROVIDER_KEYS = {"openai": "sk-oai-fake-1a2b3c", "anthropic": "sk-ant-fake-4d5e6f", "gemini": "AIza-fake-7a8b9c"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


class Fakes:
    """The three providers' local servers on an event loop of their own (the SDK below is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: dict[str, FakeProvider] = {}

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(30)

    def start(self) -> Fakes:
        for api, key in PROVIDER_KEYS.items():
            self.servers[api] = self.run(FakeProvider(api, key).start())
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            self.run(server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Door:
    sdk: openai.OpenAI
    capped: openai.OpenAI
    fakes: Fakes
    server: EmbeddedNats

    def settled(self, done: Callable[[LedgerSummary], bool], timeout: float = 15.0) -> LedgerSummary:
        """The ledger's summary once ``done`` holds for it (AssertionError with the last one at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.ledger()
            if done(now):
                return now
            assert time.monotonic() < deadline, f"the ledger did not settle within {timeout}s: {now}"
            time.sleep(0.05)

    def ledger(self) -> LedgerSummary:
        async def ask() -> LedgerSummary:
            nc = await nats.connect(self.server.url, **self.server.connect_options())
            try:
                return await summary(nc)
            finally:
                await nc.close()

        return asyncio.run(ask())


def _profile(tmp: Path, server: EmbeddedNats, fakes: Fakes, port: int) -> Path:
    urls = {api: f.base_url for api, f in fakes.servers.items()}
    providers = {
        "openai": {"base_url": f"{urls['openai']}/v1", "api_key": {"env": "DOOR_OPENAI_KEY"}},
        "anthropic": {"base_url": urls["anthropic"], "api_key": {"env": "DOOR_ANTHROPIC_KEY"}},
        "gemini": {"base_url": urls["gemini"], "api_key": {"env": "DOOR_GEMINI_KEY"}},
    }
    embedding = {
        "text-embedding-3-small": {"provider": "openai", "remote_name": "text-embedding-3-small", "price": 20.0},
        "gemini-embedding": {"provider": "gemini", "remote_name": "text-embedding-004", "price": 10.0},
    }
    limits = [{"scope": "key", "name": "capped", "period": "daily", "hard_usd": 0.000001}]
    return write_profile(
        tmp / "profile",
        server.url,
        data_dir=tmp / "data",
        overrides={
            "gateway": {"port": port, "api_keys_file": "keys.txt"},
            "providers": providers,
            "embedding_models": embedding,
            "cache": {"enabled": False},
            "budgets": {"require_reservation": True, "limits": limits, "leases": {"enabled": False}},
        },
    )


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    tmp = tmp_path_factory.mktemp("cloud-door")
    server = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=tmp / "auth").start()
    register_server(server)
    fakes = Fakes().start()
    procs: list[ActorProcess] = []
    try:
        port = free_port()
        (tmp / "data").mkdir()
        (tmp / "data" / "keys.txt").write_text(f"door:{KEY}\ncapped:{CAPPED}\n")
        profile = _profile(tmp, server, fakes, port)
        env = {f"DOOR_{api.upper()}_KEY": key for api, key in PROVIDER_KEYS.items()}
        for module in ("actors.budget_guard", "actors.cloud_proxy", "actors.router", "actors.gateway"):
            procs.append(ActorProcess(module, profile, env=env).start())
        for proc in procs:
            proc.wait_log("started", timeout=120)
        base = f"http://127.0.0.1:{port}/v1"
        sdk = openai.OpenAI(api_key=KEY, base_url=base, max_retries=0, timeout=60)
        capped = openai.OpenAI(api_key=CAPPED, base_url=base, max_retries=0, timeout=60)
        yield Door(sdk=sdk, capped=capped, fakes=fakes, server=server)
        sdk.close()
        capped.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        fakes.stop()
        server.stop()
    assert not server.violations, "permission violations on the bus:\n" + "\n".join(server.violations[:10])


@pytest.mark.parametrize(("model", "api"), [("text-embedding-3-small", "openai"), ("gemini-embedding", "gemini")])
def test_cloud_embeddings_through_the_sdk_are_charged_by_the_budget_guard(door: Door, model: str, api: str) -> None:
    """The SDK's embeddings call on a cloud embedding model: the provider's vectors in order (its wire
    format seen by the fake: OpenAI /embeddings with the key as Bearer, Gemini batchEmbedContents with the
    key in x-goog-api-key), usage counted, and the spend on the budget_guard's ledger grows."""
    before = door.ledger()
    reply = door.sdk.embeddings.create(model=model, input=["hello world", "good night moon"])
    expected = [vector_of("hello world"), vector_of("good night moon")]
    assert [d.embedding for d in reply.data] == [pytest.approx(v, rel=1e-6) for v in expected]  # float32 on the wire
    assert reply.model == model and reply.usage.prompt_tokens > 0
    seen = door.fakes.servers[api].seen[-1]
    if api == "openai":
        assert seen.path == "/v1/embeddings" and seen.body["input"] == ["hello world", "good night moon"]
    else:
        assert seen.path.endswith("text-embedding-004:batchEmbedContents") and "key" not in seen.query
    after = door.settled(lambda s: s.charges > before.charges)  # the budget_guard settles results in batches
    assert after.spent_nanos > before.spent_nanos and after.charges == before.charges + 1


def test_embeddings_refuse_chat_models_and_anthropic_by_name(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as anthropic:
        door.sdk.embeddings.create(model="claude-sonnet", input="hi")
    with pytest.raises(openai.BadRequestError) as chat:
        door.sdk.embeddings.create(model="gpt-4o", input="hi")
    with pytest.raises(openai.NotFoundError):
        door.sdk.embeddings.create(model="no-such-embedder", input="hi")
    assert "anthropic" in anthropic.value.message.lower() and "no embeddings" in anthropic.value.message
    assert "chat model" in chat.value.message and "text-embedding-3-small" in chat.value.message


def test_a_key_over_its_hard_budget_gets_no_cloud_embeddings(door: Door) -> None:
    """The hold is refused before the provider is called: 429 insufficient_quota, nothing spent."""
    calls = door.fakes.servers["openai"].calls
    with pytest.raises(openai.RateLimitError) as refused:
        door.capped.embeddings.create(model="text-embedding-3-small", input="a" * 400)
    assert refused.value.code == "insufficient_quota" and door.fakes.servers["openai"].calls == calls


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet", "gemini-2.5-pro"])
def test_cloud_function_calls_stream_as_deltas(door: Door, model: str) -> None:
    """stream=True with tools on each wire format: the first tool_calls delta has index, id, type and the
    name, later ones argument fragments; the joined arguments validate against the schema; finish_reason
    tool_calls."""
    api = {"gpt-4o": "openai", "claude-sonnet": "anthropic", "gemini-2.5-pro": "gemini"}[model]
    door.fakes.servers[api].call = ("get_weather", {"city": "Oslo", "days": 3})
    stream = door.sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Oslo for 3 days?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        stream=True,
    )
    deltas, finish = [], None
    for chunk in stream:
        if chunk.choices:
            deltas += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    head, *rest = deltas
    assert head.index == 0 and head.id and head.type == "function" and head.function.name == "get_weather"
    assert all(d.id is None and d.function.name is None for d in rest)
    arguments = (head.function.arguments or "") + "".join(d.function.arguments or "" for d in rest)
    parsed = json.loads(arguments)
    assert isinstance(parsed["city"], str) and isinstance(parsed["days"], int) and finish == "tool_calls"
    if api != "gemini":  # Gemini sends a call whole; the others in pieces
        assert len(rest) > 1
