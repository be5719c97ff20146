"""The gateway as the official `openai` SDK sees it: gateway -> router -> worker over a real
nats-server (the worker is scripted here; tests/integration/test_e2e.py uses the real ones)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import openai
import pytest
from nats.aio.client import Client as NATS

from actors.gateway.actor import Gateway
from actors.router.actor import Router
from bus.server import EmbeddedNats
from schemas.config import OrchestraConfig
from tests.support.profile import test_config
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

KEY = "sk-test-0123456789abcdef"
LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}
Start = Callable[..., Awaitable[openai.AsyncOpenAI]]


def _config(tmp_path: Path, nats: EmbeddedNats, *, gateway: dict[str, object], **more: object) -> OrchestraConfig:
    """A profile whose gateway knows alice's KEY (in <data>/keys.txt), with ``gateway`` and ``more`` overriding."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keys.txt").write_text(f"# test keys\nalice:{KEY}\n")
    overrides = {"gateway": {"port": 0, "api_keys_file": "keys.txt", **gateway}, **more}
    return test_config(tmp_path / "profile", nats.url, data_dir=tmp_path / "data", overrides=overrides)


@pytest.fixture
def gcfg(tmp_path: Path, nats_server: EmbeddedNats) -> OrchestraConfig:
    return _config(tmp_path, nats_server, gateway={"request_timeout": "20s"}, router={"attempt_timeout": "2s"})


@pytest.fixture
async def client(gcfg: OrchestraConfig, nc: NATS) -> AsyncIterator[Start]:
    actors: list[object] = []

    async def start(**worker: object) -> openai.AsyncOpenAI:
        w = ScriptedWorker(gcfg, **({"hosts": LOCAL} | worker))  # type: ignore[arg-type]
        router = Router(gcfg, instance="gw-test-router")
        gateway = Gateway(gcfg, port=0, instance="gw-test")
        for actor in (w, router, gateway):
            await actor.start(nc)
            actors.append(actor)
        await eventually(lambda: router.view.hosts.data)
        sdk = openai.AsyncOpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{gateway.bound_port}/v1", max_retries=0)
        clients.append(sdk)
        return sdk

    clients: list[openai.AsyncOpenAI] = []
    yield start
    for sdk in clients:
        await sdk.close()
    for actor in reversed(actors):
        await actor.stop(grace=0.5)  # type: ignore[attr-defined]


async def test_chat_completion_through_the_sdk(client: Start) -> None:
    sdk = await client(answers={"smollm2-135m": "Hello from SmolLM2"})
    reply = await sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello from SmolLM2"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "smollm2-135m"
    assert (
        reply.usage is not None
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )
    extra = reply.model_extra or {}
    assert extra["orchestra"]["tier"] == "local" and extra["orchestra"]["target"] == "cpu0"


async def test_completions_through_the_sdk(client: Start) -> None:
    sdk = await client(answers={"gemma3-270m": "upon a time"})
    reply = await sdk.completions.create(model="gemma3-270m", prompt="Once", max_tokens=8)
    assert reply.choices[0].text == "upon a time"
    assert reply.model == "gemma3-270m"


async def test_streaming_chat_with_usage(client: Start) -> None:
    sdk = await client(script={"*": ["stream"]}, answers={"smollm2-135m": "one two three"})
    stream = await sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces).split() == ["one", "two", "three"]
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 3


async def test_a_stream_cut_by_a_failed_attempt_ends_in_one_error_never_two_answers(client: Start) -> None:
    """Attempt 0 streams a piece and goes silent; the router times it out and attempt 1 answers. The
    client already holds part of attempt 0's answer, so it gets that part and one typed error — never
    attempt 1's text glued on, and no late chunk of attempt 0 after it."""
    sdk = await client(script={"*": ["streamhang", "ok"]})
    stream = await sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], stream=True)
    pieces: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as cut:
        await read()
    text = "".join(pieces)
    assert text.strip().endswith("@cpu0#0")
    assert "#1" not in text
    assert "answer was cut" in cut.value.message


async def test_streaming_completion_of_a_worker_that_does_not_stream(client: Start) -> None:
    """A result without chunks (a cache hit, a non-streaming worker) still arrives as a stream."""
    sdk = await client(answers={"gemma3-270m": "the whole answer"})
    stream = await sdk.completions.create(model="gemma3-270m", prompt="x", stream=True)
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == "the whole answer"


async def test_models_lists_the_library_and_the_virtual_models(client: Start) -> None:
    sdk = await client()
    ids = [m.id async for m in sdk.models.list()]
    assert {"auto", "diverse", "ensemble", "smollm2-135m", "gemma3-270m", "gpt-4o"} <= set(ids)
    assert (await sdk.models.retrieve("smollm2-135m")).owned_by == "smollm"


async def test_bad_or_missing_key_is_a_401(client: Start) -> None:
    sdk = await client()
    bad = sdk.with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as err:
        await bad.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"  # type: ignore[index]


async def test_unknown_model_is_a_404_and_a_bad_field_a_400_naming_it(client: Start) -> None:
    sdk = await client()
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="gpt-7", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as empty:
        await sdk.chat.completions.create(model="auto", messages=[])
    assert empty.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as role:
        await sdk.chat.completions.create(model="auto", messages=[{"role": "function", "content": "x", "name": "f"}])
    assert role.value.body["param"] == "messages[0].role"  # type: ignore[index]


async def test_rate_limits_and_timeouts_map_to_429_and_504(client: Start) -> None:
    sdk = await client(script={"*": ["fail:rate_limited"]})
    with pytest.raises(openai.RateLimitError) as limited:
        await sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert limited.value.status_code == 429


async def test_a_deadline_that_passes_is_a_504(client: Start) -> None:
    sdk = await client(script={"*": ["hang"]})
    with pytest.raises(openai.APIStatusError) as late:
        await sdk.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"orchestra": {"timeout_s": 1.5}},
        )
    assert late.value.status_code == 504


async def test_diverse_returns_several_choices_with_provenance(client: Start) -> None:
    sdk = await client()
    reply = await sdk.chat.completions.create(model="diverse", messages=[{"role": "user", "content": "sort"}], n=4)
    assert len(reply.choices) == 4
    families = {r["provenance"]["family"] for r in (reply.model_extra or {})["orchestra"]["responses"]}
    assert families == {"smollm", "gemma"}


async def test_diverse_code_request_mixes_families_and_each_choice_carries_its_provenance(client: Start) -> None:
    """Only SmolLM2 is loaded and the task is code: Gemma (not specialised for code, cold) still answers
    half the fan-out, and the SDK reads each choice's model, family, temperature and prompt variant."""
    sdk = await client(hosts={"cpu0": ["smollm2-135m"]})
    reply = await sdk.chat.completions.create(
        model="diverse",
        messages=[{"role": "user", "content": "Write a Python function to reverse a string"}],
        n=4,
        extra_body={"orchestra": {"tiers": ["local"]}},
    )
    provenance = [(c.model_extra or {})["orchestra"] for c in reply.choices]
    assert [p["family"] for p in provenance] == ["smollm", "gemma", "smollm", "gemma"]
    assert [p["model"] for p in provenance] == ["smollm2-135m", "gemma3-270m"] * 2
    assert [p["prompt_variant"] for p in provenance] == ["direct", "plan-first", "test-first", "example-driven"]
    assert all(isinstance(p["temperature"], float) for p in provenance)
    assert len({p["temperature"] for p in provenance}) > 1
    for choice, p in zip(reply.choices, provenance, strict=True):
        assert choice.message.content == f"{p['model']}@cpu0#0"  # the scripted worker names who answered
        assert p["request_id"].startswith(reply.id.removeprefix("chatcmpl-") + "-")


async def test_health_endpoint(client: Start) -> None:
    sdk = await client()
    async with aiohttp.ClientSession() as http, http.get(str(sdk.base_url).replace("/v1/", "/healthz")) as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "nats": True}


async def test_a_key_file_is_created_on_first_start(tmp_path: Path, nats_server: EmbeddedNats, nc: NATS) -> None:
    """With require_key and no key anywhere, the gateway writes a fresh key file (0600)."""
    cfg = test_config(tmp_path / "p", nats_server.url, data_dir=tmp_path / "d", overrides={"gateway": {"port": 0}})
    gw = Gateway(cfg, port=0)
    await gw.start(nc)
    try:
        key_file = tmp_path / "d" / "api-keys.txt"
        assert key_file.stat().st_mode & 0o777 == 0o600
        line = [x for x in key_file.read_text().splitlines() if not x.startswith("#")][0]
        key_id, key = line.split(":", 1)
        assert key_id == "default" and len(key) > 20
        assert gw.keys.check(f"Bearer {key}") is not None and gw.keys.check("Bearer nope") is None
    finally:
        await gw.stop(grace=0.2)


async def test_a_repeated_or_paraphrased_request_is_answered_from_the_cache(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS
) -> None:
    """Through the front door: the first answer comes from a model; the same question again, and
    a paraphrase of it, come from the cache (`cached: true`, with the similarity); a question that
    differs in meaning does not."""
    from actors.cache.actor import CacheActor
    from tests.support.minilm import model_dir

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keys.txt").write_text(f"alice:{KEY}\n")
    cfg = test_config(
        tmp_path / "profile",
        nats_server.url,
        data_dir=tmp_path / "data",
        overrides={
            "gateway": {"port": 0, "api_keys_file": "keys.txt"},
            "cache": {"semantic": {"model_dir": str(model_dir())}},
        },
    )
    worker = ScriptedWorker(cfg, hosts=LOCAL, answers={"smollm2-135m": "Paris is the capital of France."})
    actors = [worker, CacheActor(cfg, instance="c"), Router(cfg, instance="r"), Gateway(cfg, port=0, instance="g")]
    for actor in actors:
        await actor.start(nc)
    gateway = actors[-1]
    assert isinstance(gateway, Gateway)
    sdk = openai.AsyncOpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{gateway.bound_port}/v1", max_retries=0)
    try:
        await eventually(lambda: actors[2].view.hosts.data)  # type: ignore[attr-defined]

        async def ask(text: str) -> dict[str, object]:
            reply = await sdk.chat.completions.create(
                model="smollm2-135m", messages=[{"role": "user", "content": text}], temperature=0
            )
            ext = (reply.model_extra or {})["orchestra"]
            ext["text"] = reply.choices[0].message.content
            answered_by_model.append(not ext["cached"])
            return ext  # type: ignore[no-any-return]

        answered_by_model: list[bool] = []

        first = await ask("What is the capital of France?")
        assert first["cached"] is False and first["target"] == "cpu0"
        again = await eventually(lambda: _cached(ask, "What is the capital of France?"), timeout=10)
        assert again["text"] == "Paris is the capital of France." and again["similarity"] == 1.0
        same_key = await ask("what is the capital of france")  # normalises to the same exact key
        assert same_key["cached"] is True and same_key["similarity"] == 1.0
        # other words: the semantic layer (the verifier embeds the question without its politeness, so the
        # two vectors are the same: similarity 1.0 from the semantic index, not the exact key)
        paraphrase = await ask("Please, what is the capital of France?")
        assert paraphrase["cached"] is True and paraphrase["target"] == "cache"
        assert 0.95 <= float(paraphrase["similarity"]) <= 1.0  # type: ignore[arg-type]
        assert paraphrase["text"] == "Paris is the capital of France."
        other = await ask("What is the capital of Germany?")
        assert other["cached"] is False
        assert len(worker.seen) == sum(answered_by_model)  # every uncached answer came from the model
    finally:
        await sdk.close()
        for actor in reversed(actors):
            await actor.stop(grace=0.5)  # type: ignore[attr-defined]


async def _cached(ask: Callable[[str], Awaitable[dict[str, object]]], text: str) -> dict[str, object] | None:
    """The answer is stored once its result was read from the stream: ask until it is."""
    reply = await ask(text)
    return reply if reply["cached"] else None


async def test_a_body_over_max_body_is_refused_whoever_reads_it(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS
) -> None:
    """``gateway.max_body`` below ``heavy_body``: a light-sized body over it is a 413 from the fast lane's door too."""
    cfg = _config(tmp_path, nats_server, gateway={"max_body": 2048, "heavy_body": 65536})
    gateway = Gateway(cfg, port=0, instance="gw-max-body")
    await gateway.start(nc)
    try:
        url = f"http://127.0.0.1:{gateway.bound_port}/v1/chat/completions"
        body = b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "' + b"a" * 3000 + b'"}]}'
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            assert r.status == 413, await r.text()
    finally:
        await gateway.stop()


async def test_both_doors_name_the_server_alike_without_a_version(client: Start) -> None:
    sdk = await client()
    base = str(sdk.base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/chat/completions", json=body, headers=headers) as lane:  # the fast lane's
            assert lane.status == 200
        async with http.get(f"{base}/models", headers=headers) as models:  # aiohttp's
            assert models.status == 200
    assert lane.headers["Server"] == models.headers["Server"] == "llm-orchestra"


async def test_at_stop_a_request_aiohttp_reads_gets_the_lanes_grace_not_a_minute(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS
) -> None:
    cfg = _config(
        tmp_path,
        nats_server,
        gateway={"request_timeout": "120s"},
        bus={"shutdown_grace": "1s"},
        router={"attempt_timeout": "120s"},
    )
    worker = ScriptedWorker(cfg, hosts=LOCAL, script={"cpu0/smollm2-135m": ["hold"]})
    router = Router(cfg, instance="gw-stop-router")
    gateway = Gateway(cfg, port=0, instance="gw-stop")
    for actor in (worker, router, gateway):
        await actor.start(nc)
    try:
        await eventually(lambda: router.view.hosts.data)
        body = b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hold on"}]}'
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.bound_port)
        writer.write(  # chunked: aiohttp's to read, not the lane's
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n"
            % (KEY.encode(), len(body), body)
        )
        await eventually(lambda: worker.seen, timeout=10.0)  # the request is held by the worker
        await asyncio.wait_for(gateway.stop(), 15.0)  # aiohttp's default would wait up to 60 s for it
        assert b"200 OK" not in await asyncio.wait_for(reader.read(), 5.0)  # cut at the grace, as the lane's are
        writer.close()
    finally:
        worker.released.set()
        for actor in (gateway, router, worker):
            await actor.stop(grace=0.5)
