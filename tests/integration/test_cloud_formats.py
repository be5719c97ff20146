"""The cloud proxy against local servers that speak Anthropic's and Gemini's documented wire formats
(and Vault's KV v2 API), over a real nats-server: success and streams with usage, every error mapped,
retries of retryable errors only, cooldown and half-open recovery, rate limits, disabled providers,
key rotation, idempotent redelivery, cost to the cent."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors.cloud_proxy.actor import PROVIDER_STATE, CloudProxy
from actors.cloud_proxy.secrets import KeyRing, source_for
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from policy.pricing import cloud_cost
from schemas.base import ToolCall
from schemas.codec import ATTEMPT_FAILED, EVENT, encode
from schemas.config import load_config
from schemas.config.models import CloudModel
from schemas.config.providers import SecretRef, VaultRef
from schemas.errors import ErrorInfo
from schemas.events import ProviderCooldown
from schemas.request import ChatMessage, Sampling, Tool, make_request
from schemas.result import AttemptFailed, GenerateError, GenerateResult, Usage
from schemas.state import ProviderState
from tests.support.cloud import Answer, FakeProvider, FakeVault, cloud_profile, dispatch_for, publish_dispatch, send
from tests.support.wait import eventually

KEY_A = "sk-ant-test-8c1d5e0f4a7b"
KEY_G = "AIzaTest-1f2e3d4c5b6a"
MODELS = {
    "claude-sonnet": {"provider": "anthropic", "remote_name": "claude-sonnet-4-5", "family": "claude",
                      "price": {"input": 3.00, "output": 15.00}},
    "gemini-2.5-pro": {"provider": "gemini", "remote_name": "gemini-2.5-pro", "family": "gemini",
                       "price": {"input": 1.25, "output": 10.00}},
}  # fmt: skip
FAST_RETRY = {"max_attempts": 3, "base_delay": "20ms", "max_delay": "100ms"}

Start = Callable[..., Awaitable[CloudProxy]]


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeProvider]]:
    servers = {"anthropic": await FakeProvider("anthropic", KEY_A).start(),
               "gemini": await FakeProvider("gemini", KEY_G).start()}  # fmt: skip
    yield servers
    for server in servers.values():
        await server.stop()


def provider_cfg(api: str, base_url: str, key_file: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "api": api,
        "tier": "premium",
        "base_url": base_url,
        "api_key": {"file": str(key_file), "refresh": "200ms"},
        "timeout": "2s",
        "connect_timeout": "1s",
        "retry": FAST_RETRY,
        "cooldown": {"failures": 3, "period": "1s"},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
async def start_proxy(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, fakes: dict[str, FakeProvider]
) -> AsyncIterator[Start]:
    """Start an in-process cloud proxy whose providers are the fakes (per-provider overrides allowed)."""
    actors: list[CloudProxy] = []
    keys = {"anthropic": tmp_path / "anthropic.key", "gemini": tmp_path / "gemini.key"}
    keys["anthropic"].write_text(KEY_A + "\n")
    keys["gemini"].write_text(KEY_G)

    async def start(**overrides: dict[str, Any]) -> CloudProxy:
        providers = {
            name: {**provider_cfg(name, fakes[name].base_url, keys[name]), **overrides.get(name, {})}
            for name in ("anthropic", "gemini")
        }
        profile = cloud_profile(tmp_path / f"profile{len(actors)}", nats_server.url, providers, MODELS)
        actor = CloudProxy(load_config(profile))
        await actor.start(nc)
        actors.append(actor)
        return actor

    yield start
    for actor in actors:
        await actor.stop(grace=1)


def price(model: str) -> CloudModel:
    return msgspec.convert({"kind": "cloud", **MODELS[model]}, CloudModel)


def assert_result(result: GenerateResult | None, model: str, provider: str, text: str, usage: Usage) -> GenerateResult:
    assert result is not None
    assert result.text == text
    assert result.model == model and result.target == provider and result.tier == "premium"
    assert result.family == MODELS[model]["family"]
    assert result.usage == usage
    assert round(result.cost_usd, 2) == round(cloud_cost(price(model), usage), 2)
    assert result.cost_usd == pytest.approx(cloud_cost(price(model), usage))
    assert result.provenance is not None and result.provenance.target == provider
    return result


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_messages_answer_with_usage_and_cost(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    """A Messages call (whole or SSE) becomes a result with the provider's usage and the table's cost;
    the request carries x-api-key, anthropic-version, the system prompt apart and the stream flag."""
    await start_proxy()
    d = dispatch_for("claude-sonnet", "anthropic", stream=stream, client_key="team-a", task="t1")
    out = await send(nc, d)
    result = assert_result(out.result, "claude-sonnet", "anthropic", "Hello from the fake",
                           Usage(input_tokens=11, output_tokens=4))  # fmt: skip
    assert result.client_key == "team-a" and result.task == "t1"
    seen = fakes["anthropic"].seen[-1]
    assert seen.headers["x-api-key"] == KEY_A and seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body["model"] == "claude-sonnet-4-5" and seen.body["max_tokens"] == 8
    assert seen.body.get("stream", False) is stream
    if stream:
        assert "".join(c.text for c in out.chunks) == result.text
        assert out.chunks[-1].done and out.chunks[-1].finish_reason == "stop"
        assert [c.index for c in out.chunks] == list(range(len(out.chunks)))
        assert result.timings.first_token_ms > 0
    else:
        assert out.chunks == []


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_generate_content_answers_with_usage_key_in_header_not_url(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    """generateContent / streamGenerateContent?alt=sse: usageMetadata (thinking tokens as output) is
    the usage; the key travels in x-goog-api-key, never in the URL."""
    fakes["gemini"].thoughts_tokens = 5
    await start_proxy()
    d = dispatch_for("gemini-2.5-pro", "gemini", stream=stream, max_tokens=3)
    out = await send(nc, d)
    result = assert_result(out.result, "gemini-2.5-pro", "gemini", "Hello from the",
                           Usage(input_tokens=11, output_tokens=3 + 5))  # fmt: skip
    assert result.finish_reason == "length"
    seen = fakes["gemini"].seen[-1]
    assert KEY_G not in seen.path and "key" not in seen.query
    assert seen.path.endswith(":streamGenerateContent" if stream else ":generateContent")
    assert seen.body["generationConfig"]["maxOutputTokens"] == 3
    if stream:
        assert "".join(c.text for c in out.chunks) == result.text and out.chunks[-1].finish_reason == "length"


ERRORS = [
    # (answer, expected code, calls made with max_attempts=3)
    (Answer("error", 401, {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}),
     "auth_failed", 1),
    (Answer("error", 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "messages: roles must alternate"}}),
     "bad_request", 1),
    (Answer("error", 400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 208154 tokens > 200000 maximum"}}),
     "context_too_long", 1),
    (Answer("error", 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "Output blocked by content filtering policy"}}),
     "content_policy", 1),
    (Answer("error", 500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
     "provider_error", 3),
    (Answer("error", 529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
     "provider_error", 3),
    (Answer("garbage"), "provider_error", 3),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "code", "calls"), ERRORS, ids=[f"{e[0].status}-{e[1]}" for e in ERRORS])
async def test_provider_errors_are_mapped_and_only_retryable_ones_retried(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], answer: Answer, code: str, calls: int
) -> None:
    """Each error answer becomes its typed code on orch.result.<id>.failed; 5xx and garbage are tried
    max_attempts times, client errors once."""
    await start_proxy()
    fakes["anthropic"].plan.extend([answer] * 5)
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    assert out.failed is not None and out.error_code == code
    assert out.failed.target == "anthropic" and out.failed.model == "claude-sonnet" and not out.failed.streamed
    assert fakes["anthropic"].calls == calls


async def test_gemini_error_bodies_are_mapped(start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]) -> None:
    """Gemini's google.rpc error bodies: RESOURCE_EXHAUSTED with RetryInfo, INVALID_ARGUMENT token
    count, a refused key."""
    first = await start_proxy(gemini={"retry": {"max_attempts": 1}})
    fakes["gemini"].plan.append(Answer("error", 429, {"error": {
        "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}))  # fmt: skip
    out = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))
    assert out.error_code == "rate_limited" and out.failed and out.failed.error.retry_after_s == 37.0
    fakes["gemini"].plan.append(Answer("error", 400, {"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    }}))  # fmt: skip
    await first.stop(grace=1)  # it now holds gemini back for 37 s, as told: a fresh one goes on
    await start_proxy(gemini={"retry": {"max_attempts": 1}})
    out = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))
    assert out.error_code == "context_too_long"
    fakes["gemini"].key = "AIza-another-key-000"
    out = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))
    assert out.error_code == "auth_failed" and KEY_G not in out.failed.error.message  # type: ignore[union-attr]


async def test_429_retry_after_is_honoured_then_the_retry_succeeds(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """429 with Retry-After: 1 -> the proxy waits at least that long, retries, and answers."""
    await start_proxy()
    fakes["anthropic"].plan.append(Answer("error", 429, {"type": "error", "error": {
        "type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}},
        headers={"Retry-After": "1"}))  # fmt: skip
    started = time.monotonic()
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    assert out.result is not None and out.result.text == "Hello from the fake"
    assert time.monotonic() - started >= 1.0
    assert fakes["anthropic"].calls == 2


async def test_429_past_the_deadline_goes_back_to_the_router_with_retry_after(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """A Retry-After longer than the time left: no waiting, rate_limited with retry_after_s at once."""
    await start_proxy()
    fakes["anthropic"].plan.append(Answer("error", 429, {"type": "error", "error": {
        "type": "rate_limit_error", "message": "slow down"}}, headers={"Retry-After": "30"}))  # fmt: skip
    started = time.monotonic()
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic", timeout_s=5))
    assert out.failed is not None and out.error_code == "rate_limited"
    assert out.failed.error.retry_after_s == 30.0 and out.failed.error.retryable
    assert time.monotonic() - started < 3
    assert fakes["anthropic"].calls == 1


async def test_hanging_provider_times_out_and_is_retried(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """A server that never answers: the idle timeout (2 s) fires, the call is retried, then timeout."""
    await start_proxy(anthropic={"retry": {"max_attempts": 2, "base_delay": "10ms"}, "timeout": "500ms"})
    fakes["anthropic"].plan.extend([Answer("hang"), Answer("hang")])
    started = time.monotonic()
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    assert out.error_code == "timeout"
    assert fakes["anthropic"].calls == 2
    assert 1.0 <= time.monotonic() - started < 5


async def test_deadline_shorter_than_the_timeout_ends_the_call_at_the_deadline(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """The request's deadline bounds the call even when the provider timeout is longer."""
    await start_proxy(anthropic={"timeout": "30s"})
    fakes["anthropic"].plan.extend([Answer("hang")] * 3)
    started = time.monotonic()
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic", timeout_s=1.5))
    assert out.error_code == "timeout"
    assert time.monotonic() - started < 4


async def events_of(nc: NATS, subject: str) -> list[Any]:
    got: list[Any] = []

    async def on(msg: Msg) -> None:
        got.append(EVENT.decode(msg.data))

    await nc.subscribe(subject, cb=on)
    return got


async def provider_state(nc: NATS, name: str) -> ProviderState | None:
    kv = await TypedKV.open(nc.jetstream(), subjects.KV_PROVIDERS, PROVIDER_STATE)
    return await kv.get(name)


async def test_cooldown_opens_after_n_failures_and_half_opens(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """Three consecutive 500s open the circuit of anthropic/claude-sonnet: an event, KV shows it
    cooling, the next dispatch fails fast with unavailable without a call; after the period one trial
    goes through, succeeds, and the circuit closes."""
    events = await events_of(nc, "orch.event.provider.cooldown")
    await start_proxy(anthropic={"retry": {"max_attempts": 1}, "cooldown": {"failures": 3, "period": "1500ms"}})
    fakes["anthropic"].plan.extend([Answer("error", 500, {"error": {"type": "api_error", "message": "boom"}})] * 3)
    for _ in range(3):
        assert (await send(nc, dispatch_for("claude-sonnet", "anthropic"))).error_code == "provider_error"
    await eventually(lambda: events)
    assert isinstance(events[0], ProviderCooldown)
    assert events[0].provider == "anthropic" and events[0].model == "claude-sonnet" and events[0].failures == 3
    state = await eventually(lambda: provider_state(nc, "anthropic"))
    assert "claude-sonnet" in state.cooling and state.available
    blocked = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    assert blocked.error_code == "unavailable" and blocked.failed and blocked.failed.error.retry_after_s
    assert fakes["anthropic"].calls == 3
    other = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))  # another deployment is not affected
    assert other.result is not None
    await asyncio.sleep(events[0].until - time.time())  # the cooldown period itself is what is tested
    recovered = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    assert recovered.result is not None and fakes["anthropic"].calls == 4

    async def closed() -> bool:
        s = await provider_state(nc, "anthropic")
        return s is not None and not s.cooling

    await eventually(closed)


async def test_half_open_trial_failure_opens_the_circuit_again(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """In half-open state one failed trial is enough to open the circuit for another period."""
    events = await events_of(nc, "orch.event.provider.cooldown")
    await start_proxy(anthropic={"retry": {"max_attempts": 1}, "cooldown": {"failures": 2, "period": "1s"}})
    fakes["anthropic"].plan.extend([Answer("error", 503, {"error": {"type": "api_error", "message": "x"}})] * 3)
    for _ in range(2):
        await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    await eventually(lambda: len(events) == 1)
    await asyncio.sleep(events[0].until - time.time())
    assert (await send(nc, dispatch_for("claude-sonnet", "anthropic"))).error_code == "provider_error"
    await eventually(lambda: len(events) == 2)
    assert (await send(nc, dispatch_for("claude-sonnet", "anthropic"))).error_code == "unavailable"
    assert fakes["anthropic"].calls == 3


async def test_rate_limit_waits_within_the_deadline_or_refuses(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """rpm 60 spread evenly (burst 1 s): the second call waits ~1 s and is answered; a call whose
    deadline is nearer than its slot gets rate_limited with retry_after_s, without a provider call."""
    await start_proxy(gemini={"limits": {"rpm": 60, "burst": "1s"}})
    first = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))
    assert first.result is not None
    started = time.monotonic()
    second = await send(nc, dispatch_for("gemini-2.5-pro", "gemini", timeout_s=10))
    assert second.result is not None
    assert time.monotonic() - started >= 0.5
    refused = await send(nc, dispatch_for("gemini-2.5-pro", "gemini", timeout_s=0.3))
    assert refused.error_code == "rate_limited" and refused.failed is not None
    assert refused.failed.error.retry_after_s is not None and 0 < refused.failed.error.retry_after_s <= 1.0
    assert fakes["gemini"].calls == 2


async def test_token_limit_per_model_refuses_a_call_that_cannot_fit_before_its_deadline(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """model_limits tpm: a request whose estimate exceeds what refills before its deadline is refused."""
    await start_proxy(anthropic={"model_limits": {"claude-sonnet": {"tpm": 600, "burst": "1s"}}})
    assert (await send(nc, dispatch_for("claude-sonnet", "anthropic", max_tokens=9))).result is not None
    refused = await send(nc, dispatch_for("claude-sonnet", "anthropic", max_tokens=9, timeout_s=0.2))
    assert refused.error_code == "rate_limited"
    assert fakes["anthropic"].calls == 1


async def test_provider_without_a_key_is_disabled_and_fails_fast(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    """No key at its file: KV says unavailable, dispatches fail at once with `unavailable`."""
    await start_proxy(gemini={"api_key": {"file": str(tmp_path / "missing.key")}})
    state = await eventually(lambda: provider_state(nc, "gemini"))
    assert state.available is False
    out = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))
    assert out.error_code == "unavailable" and "no API key" in out.failed.error.message  # type: ignore[union-attr]
    assert fakes["gemini"].calls == 0


async def test_key_rotation_in_a_file_is_picked_up_without_restart(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    """The provider rotates its key; the file is rewritten; the next call uses the new key."""
    await start_proxy()
    assert (await send(nc, dispatch_for("claude-sonnet", "anthropic"))).result is not None
    fakes["anthropic"].key = "sk-ant-rotated-77aa11bb22"
    assert (await send(nc, dispatch_for("claude-sonnet", "anthropic"))).error_code == "auth_failed"
    (tmp_path / "anthropic.key").write_text("sk-ant-rotated-77aa11bb22\n")
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
    assert out.result is not None
    assert fakes["anthropic"].seen[-1].headers["x-api-key"] == "sk-ant-rotated-77aa11bb22"


async def test_vault_kv2_key_is_read_and_rotation_is_picked_up(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """api_key: {vault: ...}: the key comes from Vault's KV v2 API; a new version in Vault is read
    within the refresh period and used, with no restart."""
    vault = await FakeVault("hvs.test-token-123456").start()
    try:
        vault.secrets["secret/orchestra/gemini"] = {"api_key": KEY_G}
        monkeypatch.setenv("VAULT_ADDR", vault.addr)
        monkeypatch.setenv("VAULT_TOKEN", "hvs.test-token-123456")
        await start_proxy(gemini={"api_key": {"vault": {"path": "orchestra/gemini"}, "refresh": "200ms"}})
        assert (await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))).result is not None
        vault.secrets["secret/orchestra/gemini"] = {"api_key": "AIzaRotated-99887766"}
        fakes["gemini"].key = "AIzaRotated-99887766"
        reads = vault.reads
        await eventually(lambda: vault.reads > reads + 1)
        out = await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))
        assert out.result is not None
        assert fakes["gemini"].seen[-1].headers["x-goog-api-key"] == "AIzaRotated-99887766"
    finally:
        await vault.stop()


async def test_redelivered_dispatch_with_a_stored_result_does_not_call_the_provider(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """A dispatch whose request already has an outcome (a redelivery, a late fallback) is acked
    without calling the provider again."""
    await start_proxy()
    first = dispatch_for("claude-sonnet", "anthropic")
    assert (await send(nc, first)).result is not None and fakes["anthropic"].calls == 1
    await publish_dispatch(nc, msgspec.structs.replace(first, attempt=1))

    async def acked() -> bool:
        info = await nc.jetstream().consumer_info("DISPATCH", "cloud-proxy")
        return info.delivered.stream_seq >= 2 and info.num_ack_pending == 0

    await eventually(acked)
    assert fakes["anthropic"].calls == 1


async def test_unknown_model_or_provider_fails_the_attempt(start_proxy: Start, nc: NATS) -> None:
    """A dispatch for a model the library lacks, or a provider not configured, is answered, not dropped."""
    await start_proxy()
    assert (await send(nc, dispatch_for("no-such-model", "anthropic"))).error_code == "not_found"
    assert (await send(nc, dispatch_for("claude-sonnet", "nowhere"))).error_code == "unavailable"


async def test_mid_stream_error_is_reported_as_streamed_with_the_tokens_spent(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """An overloaded error event after some text: no retry (text reached the client), streamed=True."""
    await start_proxy()
    fakes["anthropic"].plan.append(Answer("sse", body=(
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hel"}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )))  # fmt: skip
    out = await send(nc, dispatch_for("claude-sonnet", "anthropic", stream=True))
    assert out.failed is not None and out.error_code == "provider_error" and out.failed.streamed
    assert out.failed.usage.output_tokens == 1 and out.failed.cost_usd > 0
    assert [c.text for c in out.chunks] == ["Hel"]
    assert fakes["anthropic"].calls == 1


async def test_key_ring_keeps_the_last_key_when_vault_fails_and_never_logs_a_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Vault refusing the token: the key we had stays in use; a deleted secret disables the provider;
    log lines name the path, never a value or the token."""
    caplog.set_level(logging.INFO)
    vault = await FakeVault("hvs.token-abcdef").start()
    session = aiohttp.ClientSession()
    try:
        vault.secrets["secret/orchestra/openai"] = {"api_key": "sk-vault-value-123456"}
        monkeypatch.setenv("VAULT_ADDR", vault.addr)
        monkeypatch.setenv("VAULT_TOKEN", "hvs.token-abcdef")
        ring = KeyRing("openai", source_for(SecretRef(vault=VaultRef(path="orchestra/openai")), lambda: session))
        assert await ring.load() and ring.key == "sk-vault-value-123456"
        monkeypatch.setenv("VAULT_TOKEN", "hvs.revoked-000000")
        assert not await ring.load() and ring.key == "sk-vault-value-123456"
        del vault.secrets["secret/orchestra/openai"]
        monkeypatch.setenv("VAULT_TOKEN", "hvs.token-abcdef")
        assert await ring.load() and ring.key is None
    finally:
        await session.close()
        await vault.stop()
    text = caplog.text
    assert "secret/orchestra/openai" in text and "HTTP 403" in text and "disabled" in text
    assert "sk-vault-value-123456" not in text and "hvs." not in text


async def test_late_answer_after_another_outcome_is_recorded_as_a_failed_attempt_with_its_cost(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """The router answered the request (e.g. a timeout) while the provider was still generating: the
    late result is not stored, and the money it cost is reported on orch.result.<id>.failed."""
    await start_proxy()
    d = dispatch_for("claude-sonnet", "anthropic")
    error = GenerateError(request_id=d.request.id, error=ErrorInfo.of("timeout", "gave up"))
    await nc.jetstream().publish(subjects.result(d.request.id), encode(error), headers={"Nats-Msg-Id": d.request.id})
    failed: list[AttemptFailed] = []

    async def on_failed(msg: Msg) -> None:
        failed.append(ATTEMPT_FAILED.decode(msg.data))

    await nc.subscribe(subjects.attempt_failed(d.request.id), cb=on_failed)
    await publish_dispatch(nc, d)  # attempt 0, first delivery: no look-up, the provider is called
    await eventually(lambda: failed)
    assert failed[0].error.code == "cancelled" and failed[0].usage == Usage(input_tokens=11, output_tokens=4)
    assert failed[0].cost_usd == pytest.approx(cloud_cost(price("claude-sonnet"), failed[0].usage))
    stored = await nc.jetstream().get_last_msg("RESULTS", subjects.result(d.request.id))
    assert b'"kind":"error"' in stored.data  # the router's outcome stays the only one
    assert fakes["anthropic"].calls == 1


WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters='{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}',
)
HISTORY = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Weather in Paris and Rome?"),
    ChatMessage(
        role="assistant",
        content="",
        tool_calls=[
            ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="call_b", name="get_weather", arguments='{"city": "Rome"}'),
        ],
    ),
    ChatMessage(role="tool", content='{"sky": "sunny"}', tool_call_id="call_a"),
    ChatMessage(role="tool", content='{"sky": "rain"}', tool_call_id="call_b"),
    ChatMessage(role="user", content="And Oslo?"),
]


def tool_dispatch(model: str, provider: str, *, stream: bool = False) -> Any:
    req = make_request(
        messages=HISTORY,
        model=model,
        stream=stream,
        sampling=Sampling(temperature=0.0, max_tokens=50, tools=[WEATHER], tool_choice="required"),
    )
    return dispatch_for(model, provider, request=req)


async def test_anthropic_tools_calls_and_results_are_translated(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """tools -> input_schema and tool_choice any; the history's calls -> tool_use blocks and its results ->
    one user turn of tool_result blocks; a tool_use answer -> tool_calls."""
    await start_proxy()
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    fakes["anthropic"].plan.append(
        Answer(
            kind="json",
            body={"content": [use], "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 9}},
        )
    )
    out = await send(nc, tool_dispatch("claude-sonnet", "anthropic"))
    assert out.result is not None and out.result.finish_reason == "tool_calls" and not out.chunks
    assert out.result.tool_calls == [ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Oslo"}')]
    body = fakes["anthropic"].seen[-1].body
    assert "stream" not in body and body["system"] == "Be brief."
    assert body["tools"] == [{"name": "get_weather", "description": "The weather in a city",
                              "input_schema": json.loads(WEATHER.parameters)}]  # fmt: skip
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}}]}  # fmt: skip
    assert [b["tool_use_id"] for b in body["messages"][2]["content"]] == ["call_a", "call_b"]
    assert body["messages"][2]["role"] == "user" and body["messages"][3] == {"role": "user", "content": "And Oslo?"}


@pytest.mark.parametrize(("api", "model"), [("anthropic", "claude-sonnet"), ("gemini", "gemini-2.5-pro")])
async def test_a_streamed_call_goes_out_as_deltas(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider], api: str, model: str
) -> None:
    """stream: the provider's streamed call (Anthropic: tool_use start + input_json_delta pieces; Gemini: one
    functionCall) -> chunks with OpenAI-style deltas (the first with id and name), arguments that join into
    the call's JSON, and the result's tool_calls with the same id."""
    await start_proxy()
    fakes[api].call = ("get_weather", {"city": "Oslo", "days": 3})
    out = await send(nc, tool_dispatch(model, api, stream=True))
    assert out.result is not None and out.result.finish_reason == "tool_calls"
    deltas = [d for c in out.chunks for d in c.tool_calls]
    head, *rest = deltas
    assert head.name == "get_weather" and head.id and all(d.name is None for d in rest)
    joined = head.arguments + "".join(d.arguments for d in rest)
    assert json.loads(joined) == {"city": "Oslo", "days": 3}
    assert out.result.tool_calls[0].id == head.id and json.loads(out.result.tool_calls[0].arguments)["days"] == 3
    assert fakes[api].seen[-1].body.get("stream") is (True if api == "anthropic" else None)
    if api == "anthropic":
        assert len(rest) > 1  # fragments, as Anthropic sent them


async def test_gemini_tools_calls_and_results_are_translated(
    start_proxy: Start, nc: NATS, fakes: dict[str, FakeProvider]
) -> None:
    """tools -> functionDeclarations and mode ANY; calls -> functionCall parts, results -> functionResponse
    parts named after their call; a functionCall answer -> tool_calls with fresh ids."""
    await start_proxy()
    part = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    answer = {
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 5},
    }
    fakes["gemini"].plan.append(Answer(kind="json", body=answer))
    out = await send(nc, tool_dispatch("gemini-2.5-pro", "gemini"))
    assert out.result is not None and out.result.finish_reason == "tool_calls"
    (call,) = out.result.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"} and call.id.startswith("call_")
    body = fakes["gemini"].seen[-1].body
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    model_turn, results = body["contents"][1], body["contents"][2]
    assert [p["functionCall"]["args"]["city"] for p in model_turn["parts"]] == ["Paris", "Rome"]
    assert [p["functionResponse"]["name"] for p in results["parts"]] == ["get_weather", "get_weather"]
    assert results["parts"][1]["functionResponse"]["response"] == {"sky": "rain"}
