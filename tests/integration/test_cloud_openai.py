"""The cloud proxy's OpenAI client against a real OpenAI-compatible server: llama-cpp-python's own
server on SmolLM2, configured as the Together AI provider (key from the environment) and as OpenAI
(key from a file). Only the base URL differs from production."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors.budget_guard.actor import BudgetGuard
from actors.cloud_proxy.actor import CloudProxy
from bus.server import EmbeddedNats
from cli.status import collect
from policy.money import NANOS, to_nanos
from policy.pricing import cloud_cost, estimate_tokens, max_input_tokens, worst_case_cost
from schemas.config import load_config
from schemas.config.models import CloudModel
from schemas.config.ops import LocalCostCfg
from tests.support.budget import reserve, settled, summary
from tests.support.cloud import Answer, FakeProvider, LlamaServer, cloud_profile, dispatch_for, llama_server, send
from tests.support.procs import REPO, ActorProcess
from tests.support.profile import write_profile
from tests.support.wait import eventually

LLAMA_KEY = "sk-llama-test-5f9e2c7a1b3d"
MODELS = {
    "together/llama3.1-70b": {"provider": "together", "remote_name": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
                              "family": "llama", "price": {"input": 0.88, "output": 0.88}},
    "gpt-4o": {"provider": "openai", "remote_name": "gpt-4o", "family": "gpt",
               "price": {"input": 1.10, "output": 4.40}},
}  # fmt: skip


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with llama_server(tmp_path_factory.mktemp("llama"), LLAMA_KEY) as server:
        yield server


@pytest.fixture
async def proxy(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, llama: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CloudProxy]:
    monkeypatch.setenv("ORCH_TEST_TOGETHER_KEY", LLAMA_KEY)
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-wrong-key-for-llama-000\n")
    common = {"base_url": llama.base_url, "timeout": "30s", "retry": {"max_attempts": 2, "base_delay": "50ms"}}
    providers = {
        "together": {"api": "openai", "tier": "together", "api_key": {"env": "ORCH_TEST_TOGETHER_KEY"}, **common},
        "openai": {"api": "openai", "tier": "premium", "api_key": {"file": str(key_file)}, **common},
    }
    actor = CloudProxy(load_config(cloud_profile(tmp_path / "profile", nats_server.url, providers, MODELS)))
    await actor.start(nc)
    yield actor
    await actor.stop(grace=1)


def model(name: str) -> CloudModel:
    return msgspec.convert({"kind": "cloud", **MODELS[name]}, CloudModel)


@pytest.mark.parametrize("completion", [False, True], ids=["chat", "completions"])
async def test_openai_compatible_answer_carries_the_servers_usage_and_cost(
    proxy: CloudProxy, nc: NATS, completion: bool
) -> None:
    """Non-streaming chat / completions: the text, the server's usage, the table's cost to the cent."""
    d = dispatch_for(
        "together/llama3.1-70b", "together", tier="together", max_tokens=8,
        prompt="The capital of France is" if completion else None, text="Say hello in one word.",
    )  # fmt: skip
    out = await send(nc, d, timeout=60)
    result = out.result
    assert result is not None, out.failed
    assert result.text.strip() and result.tier == "together" and result.target == "together"
    assert result.family == "llama" and result.model == "together/llama3.1-70b"
    assert 0 < result.usage.output_tokens <= 8 and result.usage.input_tokens > 3
    assert round(result.cost_usd, 2) == round(cloud_cost(model("together/llama3.1-70b"), result.usage), 2)
    assert result.cost_usd == pytest.approx(result.usage.total_tokens * 0.88 / 1e6)


@pytest.mark.parametrize("completion", [False, True], ids=["chat", "completions"])
async def test_openai_compatible_stream_counts_tokens_when_the_server_sends_no_usage(
    proxy: CloudProxy, nc: NATS, completion: bool
) -> None:
    """llama.cpp's server ignores stream_options.include_usage: output tokens are the streamed pieces,
    input tokens the estimate; chunks on orch.stream.<id> add up to the result's text."""
    prompt = "Once upon a time" if completion else None
    d = dispatch_for("together/llama3.1-70b", "together", tier="together", stream=True, max_tokens=8, prompt=prompt)
    out = await send(nc, d, timeout=60)
    result = out.result
    assert result is not None, out.failed
    pieces = [c for c in out.chunks if c.text]
    assert "".join(c.text for c in out.chunks) == result.text and result.text
    assert out.chunks[-1].done and out.chunks[-1].finish_reason == result.finish_reason
    assert result.usage.output_tokens == len(pieces) <= 8
    assert result.usage.input_tokens == estimate_tokens(prompt or "Say hello")
    assert result.cost_usd == pytest.approx(cloud_cost(model("together/llama3.1-70b"), result.usage))


async def test_a_cap_of_one_holds_worth_is_not_passed_by_what_the_server_really_bills(
    proxy: CloudProxy, nc: NATS, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The prompt "Say hello in one word." estimates 10 input tokens (chars / 3, as the router did) but
    the server bills 15 with its ChatML template. With a Together cap of exactly one attempt's hold as
    the router computes it now (the input bound), the charged cost stays under the cap; the hold from
    the estimate would have been passed."""
    d = dispatch_for("together/llama3.1-70b", "together", tier="together", max_tokens=1, text="Say hello in one word.")
    request, price, local = d.request, model("together/llama3.1-70b"), LocalCostCfg()
    hold = to_nanos(worst_case_cost(price, max_input_tokens(request), request.sampling.max_tokens, local))
    estimated = to_nanos(worst_case_cost(price, estimate_tokens(request.prompt_text()), 1, local))
    cap = {"scope": "tier", "name": "together", "period": "daily", "hard_usd": hold / NANOS}
    guard = BudgetGuard(
        load_config(write_profile(tmp_path / "guard", nats_server.url, overrides={"budgets": {"limits": [cap]}}))
    )
    await guard.start(nc)
    try:
        granted = await reserve(nc, request.id, hold / NANOS, tier="together", deadline=request.effective_deadline)
        assert granted.granted and granted.remaining_usd == 0
        held = msgspec.structs.replace(d, reservation_id=granted.reservation_id, reserved_nanos=hold)
        result = (await send(nc, held, timeout=60)).result
        assert result is not None
        assert result.usage.input_tokens > estimate_tokens(request.prompt_text())  # the estimate under-covers
        assert estimated < to_nanos(result.cost_usd) <= hold
        await eventually(lambda: settled(nc, request.id))
        (limit,) = (await summary(nc)).limits
        assert limit.scope == "tier:together:daily" and limit.held_usd == 0
        assert 0 < to_nanos(limit.spent_usd) <= to_nanos(limit.hard_usd or 0)
    finally:
        await guard.stop(grace=1)


async def test_refused_key_is_auth_failed_without_the_key(proxy: CloudProxy, nc: NATS) -> None:
    """The server answers 401 to a wrong bearer key: auth_failed, not retried into success, no key in it."""
    out = await send(nc, dispatch_for("gpt-4o", "openai"), timeout=60)
    assert out.failed is not None and out.error_code == "auth_failed"
    assert "sk-wrong-key" not in out.failed.error.message and LLAMA_KEY not in out.failed.error.message


async def test_key_file_rotation_reaches_a_running_proxy(proxy: CloudProxy, nc: NATS, tmp_path: Path) -> None:
    """After the right key is written to the file, the next call succeeds with no restart."""
    assert (await send(nc, dispatch_for("gpt-4o", "openai"), timeout=60)).error_code == "auth_failed"
    (tmp_path / "openai.key").write_text(LLAMA_KEY)
    out = await send(nc, dispatch_for("gpt-4o", "openai", max_tokens=4), timeout=60)
    assert out.result is not None, out.failed
    assert out.result.tier == "premium" and out.result.target == "openai"
    assert round(out.result.cost_usd, 2) == round(cloud_cost(model("gpt-4o"), out.result.usage), 2)


async def test_prompt_longer_than_the_context_is_context_too_long(proxy: CloudProxy, nc: NATS) -> None:
    """A prompt beyond the server's 2048-token context: context_too_long, for the router to fall back."""
    d = dispatch_for("together/llama3.1-70b", "together", tier="together", text="word " * 3000)
    out = await send(nc, d, timeout=60)
    assert out.failed is not None and out.error_code == "context_too_long", out.failed


# --- the actor as a process, and the secret-leak grep ---------------------------------------------
KEY_A = "sk-ant-leakcanary-3e8b0d2f6c4a"
KEY_G = "AIza-leakcanary-9d7c5b3a1e0f"


@pytest.mark.slow
async def test_process_answers_every_format_and_no_key_leaks_to_logs_bus_or_status(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, llama: LlamaServer, processes: list[ActorProcess]
) -> None:
    """``python -m actors.cloud_proxy`` (DEBUG logging) answers Together (llama.cpp), Anthropic and
    Gemini, whole and streamed, plus errors from a provider that echoes our key back; every message
    on the bus (``>``), every log line and `orchestra status` are then grepped for the three keys."""
    captured: list[bytes] = []

    async def capture(msg: Msg) -> None:
        captured.append(msg.subject.encode() + b" " + repr(msg.headers).encode() + b" " + msg.data)

    await nc.subscribe(">", cb=capture)
    anthropic = await FakeProvider("anthropic", KEY_A).start()
    gemini = await FakeProvider("gemini", KEY_G).start()
    try:
        (tmp_path / "anthropic.key").write_text(KEY_A)
        fast = {"retry": {"max_attempts": 2, "base_delay": "20ms"}, "timeout": "30s"}
        providers = {
            "together": {"api": "openai", "tier": "together", "base_url": llama.base_url,
                         "api_key": {"env": "ORCH_TEST_TOGETHER_KEY"}, **fast},
            "anthropic": {"api": "anthropic", "tier": "premium", "base_url": anthropic.base_url,
                          "api_key": {"file": str(tmp_path / "anthropic.key")}, **fast},
            "gemini": {"api": "gemini", "tier": "premium", "base_url": gemini.base_url,
                       "api_key": {"env": "ORCH_TEST_GEMINI_KEY"}, **fast},
        }  # fmt: skip
        models = {**MODELS, **LEAK_MODELS}
        profile = cloud_profile(tmp_path / "profile", nats_server.url, providers, models, log_level="DEBUG")
        env = {"ORCH_TEST_TOGETHER_KEY": LLAMA_KEY, "ORCH_TEST_GEMINI_KEY": KEY_G}
        proc = ActorProcess("actors.cloud_proxy", profile, env=env).start()
        processes.append(proc)
        proc.wait_log("cloud_proxy started", timeout=30)

        for stream in (False, True):
            out = await send(nc, dispatch_for("together/llama3.1-70b", "together", tier="together", stream=stream))
            assert out.result is not None and out.result.text, out.failed
            assert (await send(nc, dispatch_for("claude-sonnet", "anthropic", stream=stream))).result is not None
            assert (await send(nc, dispatch_for("gemini-2.5-pro", "gemini", stream=stream))).result is not None
        anthropic.plan.append(Answer("error", 400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": f"malformed request sent with key {KEY_A}"}}))  # fmt: skip
        echoed = await send(nc, dispatch_for("claude-sonnet", "anthropic"))
        assert echoed.error_code == "bad_request" and echoed.failed and "***" in echoed.failed.error.message
        gemini.key = "AIza-some-other-key"
        assert (await send(nc, dispatch_for("gemini-2.5-pro", "gemini"))).error_code == "auth_failed"
        report = json.dumps(await collect(nc.jetstream())).encode()
        assert b"together" in report and b"anthropic" in report
        await nc.flush()
        assert proc.terminate() == 0
    finally:
        await anthropic.stop()
        await gemini.stop()

    logs = proc.output()
    assert "DEBUG" in logs and "cloud_proxy stopped" in logs
    assert len(captured) > 20
    for key in (LLAMA_KEY, KEY_A, KEY_G):
        assert key not in logs
        assert key.encode() not in report
        leaks = [m[:200] for m in captured if key.encode() in m]
        assert not leaks, leaks


LEAK_MODELS = {
    "claude-sonnet": {"provider": "anthropic", "remote_name": "claude-sonnet-4-5", "family": "claude",
                      "price": {"input": 3.00, "output": 15.00}},
    "gemini-2.5-pro": {"provider": "gemini", "remote_name": "gemini-2.5-pro", "family": "gemini",
                       "price": {"input": 1.25, "output": 10.00}},
}  # fmt: skip


@pytest.mark.slow
async def test_orchestra_ask_answers_through_router_cloud_proxy_and_an_openai_compatible_server(
    tmp_path: Path, nats_server: EmbeddedNats, llama: LlamaServer, processes: list[ActorProcess]
) -> None:
    """End to end: `orchestra ask --model together/llama3.1-70b` (whole and --stream) through the real
    router and ``python -m actors.cloud_proxy`` to llama.cpp's OpenAI-compatible server."""
    providers = {"together": {"api": "openai", "tier": "together", "base_url": llama.base_url,
                              "api_key": {"env": "ORCH_TEST_TOGETHER_KEY"}, "timeout": "30s"}}  # fmt: skip
    profile = cloud_profile(tmp_path / "profile", nats_server.url, providers, MODELS)
    env = {"ORCH_TEST_TOGETHER_KEY": LLAMA_KEY}
    for module in ("actors.cloud_proxy", "actors.router"):
        proc = ActorProcess(module, profile, env=env).start()
        processes.append(proc)
        proc.wait_log(f"{module.split('.')[1]} started", timeout=30)
    orchestra = str(Path(sys.executable).parent / "orchestra")
    for extra in ([], ["--stream"]):
        args = [orchestra, "--config", str(profile), "ask", "--model", "together/llama3.1-70b", "--max-tokens", "8",
                "--json", *extra, "Say hello"]  # fmt: skip
        out = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=90, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert result["kind"] == "result" and result["target"] == "together" and result["tier"] == "together"
        assert result["text"] and result["usage"]["output_tokens"] > 0 and result["cost_usd"] > 0
