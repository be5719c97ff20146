"""End to end through real parts only: the official `openai` SDK -> gateway -> router -> two real
gpu_host processes (SmolLM2 135M and Gemma 3 270M from PyPI, llama.cpp) and the cloud_proxy in front of
llama.cpp's own OpenAI-compatible server (the Together tier), with the budget_guard reserving every paid
call and the diversity_monitor serving its dashboard (looked at in headless chromium). One orchestra for
the module; the test that kills a host runs last."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import openai
import pytest

from bus.server import EmbeddedNats
from tests.support.browser import Chromium
from tests.support.client import outcomes_stored
from tests.support.cloud import free_port, llama_server
from tests.support.minilm import model_dir
from tests.support.procs import REPO, ActorProcess
from tests.support.profile import register_server, write_profile
from tests.support.wait import eventually

pytestmark = pytest.mark.slow
KEY = "sk-e2e-7f3a9c2b5d1e8f4a6b0c"
TOGETHER_KEY = "tg-e2e-1c4d7e0a3b6f9c2d5e8a"


@dataclass
class Orchestra:
    sdk: openai.OpenAI
    nats_url: str
    hosts: dict[str, ActorProcess]
    profile: Path
    server: EmbeddedNats
    monitor: ActorProcess


@pytest.fixture(scope="module")
def orchestra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestra]:
    tmp = tmp_path_factory.mktemp("e2e")
    server = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=tmp / "auth").start()
    register_server(server)  # the profile names its credentials: every actor connects as its own role
    procs: list[ActorProcess] = []
    try:
        with llama_server(tmp, TOGETHER_KEY) as peer:
            gw_port = free_port()
            (tmp / "data").mkdir()
            (tmp / "data" / "keys.txt").write_text(f"e2e:{KEY}\n")
            profile = write_profile(
                tmp / "profile",
                server.url,
                data_dir=tmp / "data",
                overrides={
                    "gateway": {"port": gw_port, "api_keys_file": "keys.txt"},
                    "router": {"attempt_timeout": "60s"},
                    "budgets": {"require_reservation": True},
                    "cards": {"cpu1": {"device": "cpu", "memory": "1.5GB"}},
                    "hosts": {
                        "cpu0": {"cards": ["cpu0"], "n_threads": 1, "heartbeat": "1s"},
                        "cpu1": {"cards": ["cpu1"], "n_threads": 1, "heartbeat": "1s"},
                    },
                    "providers": {
                        "together": {"base_url": peer.base_url, "api_key": {"env": "E2E_TOGETHER_KEY"}},
                    },
                    "monitor": {"metrics_port": 0, "dashboard": {"refresh": "500ms"}},
                    "cache": {"semantic": {"model_dir": str(model_dir())}},
                },
            )
            env = {"E2E_TOGETHER_KEY": TOGETHER_KEY}
            hosts = {}
            for module, args in (
                ("actors.gpu_host", ["--host", "cpu0"]),
                ("actors.gpu_host", ["--host", "cpu1"]),
                ("actors.budget_guard", []),
                ("actors.cloud_proxy", []),
                ("actors.router", []),
                ("actors.gateway", []),
                ("actors.diversity_monitor", []),
            ):
                proc = ActorProcess(module, profile, *args, env=env).start()
                procs.append(proc)
                if module == "actors.gpu_host":
                    hosts[args[1]] = proc
                if module == "actors.diversity_monitor":
                    monitor = proc
            for proc in procs:
                proc.wait_log("started", timeout=120)
            sdk = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{gw_port}/v1", max_retries=0, timeout=120)
            _wait_ready(sdk)
            yield Orchestra(sdk=sdk, nats_url=server.url, hosts=hosts, profile=profile, server=server, monitor=monitor)
            sdk.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        server.stop()
    assert not server.violations, "permission violations on the bus:\n" + "\n".join(server.violations[:10])


def _wait_ready(sdk: openai.OpenAI, timeout: float = 120.0) -> None:
    """Until the local models are loaded and the cloud provider is up, a request may fail: retry."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            sdk.chat.completions.create(
                model="smollm2-135m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            sdk.chat.completions.create(
                model="together/llama3.1-70b", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            return
        except openai.APIStatusError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"the orchestra did not become ready: {last}")


def extension(reply: object) -> dict[str, object]:
    return (getattr(reply, "model_extra", None) or {})["orchestra"]  # type: ignore[no-any-return]


def test_a_chat_is_answered_by_smollm2_on_a_gpu_host(orchestra: Orchestra) -> None:
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].message.content
    assert reply.model == "smollm2-135m" and reply.usage and reply.usage.completion_tokens > 0
    ext = extension(reply)
    assert ext["tier"] == "local" and ext["target"] in ("cpu0", "cpu1") and ext["family"] == "smollm"


def test_a_completion_is_answered_by_gemma(orchestra: Orchestra) -> None:
    reply = orchestra.sdk.completions.create(model="gemma3-270m", prompt="The sky is", max_tokens=12, temperature=0)
    assert reply.choices[0].text.strip()
    assert extension(reply)["family"] == "gemma"


def test_streaming_from_a_real_model_with_usage(orchestra: Orchestra) -> None:
    stream = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens >= len(pieces) - 1


def test_a_cloud_model_is_answered_through_the_cloud_proxy_and_costs_the_table_price(orchestra: Orchestra) -> None:
    reply = orchestra.sdk.chat.completions.create(
        model="together/llama3.1-70b", messages=[{"role": "user", "content": "Say hello"}], max_tokens=8
    )
    ext = extension(reply)
    assert ext["tier"] == "together" and ext["target"] == "together"
    usage = reply.usage
    assert usage is not None
    expected = (usage.prompt_tokens * 0.88 + usage.completion_tokens * 0.88) / 1e6
    assert ext["cost_usd"] == pytest.approx(expected, abs=1e-9)


def test_diverse_answers_come_from_both_local_families(orchestra: Orchestra) -> None:
    reply = orchestra.sdk.chat.completions.create(
        model="diverse",
        messages=[{"role": "user", "content": "Write one sentence about rivers."}],
        max_tokens=16,
        n=4,
        extra_body={"orchestra": {"tiers": ["local"]}},
    )
    assert len(reply.choices) == 4
    responses = extension(reply)["responses"]
    assert {r["provenance"]["family"] for r in responses} == {"smollm", "gemma"}  # type: ignore[index, union-attr]
    assert len({r["provenance"]["prompt_variant"] for r in responses}) == 4  # type: ignore[index, union-attr]
    per_choice = [(c.model_extra or {})["orchestra"] for c in reply.choices]  # each choice says who made it
    assert [p["family"] for p in per_choice] == [r["provenance"]["family"] for r in responses]  # type: ignore[index]
    assert all(p["temperature"] is not None and p["prompt_variant"] for p in per_choice)


def test_an_ensemble_of_both_local_models_is_weighed_by_their_token_logprobs(orchestra: Orchestra) -> None:
    """Issue 16's probe: each answer's confidence is its mean token probability from llama.cpp (not the
    configured rank), and the one pair of answers is judged with its method and reason."""
    reply = orchestra.sdk.chat.completions.create(
        model="ensemble",
        messages=[{"role": "user", "content": "What is 2+2? Answer with a number."}],
        max_tokens=12,
        temperature=0,
        extra_body={"orchestra": {"tiers": ["local"]}},
    )
    ext = extension(reply)
    responses: list[dict[str, Any]] = ext["responses"]  # type: ignore[assignment]
    assert {r["provenance"]["family"] for r in responses} == {"smollm", "gemma"}
    for r in responses:
        assert r["confidence_source"] == "logprobs" and 0.0 < r["confidence"] <= 1.0
        assert r.get("logprobs") is None  # asked by the router for the vote, not by this client
    consensus: dict[str, Any] = ext["consensus"]  # type: ignore[assignment]
    (pair,) = consensus["pairs"]
    assert pair["method"] in {"contradiction", "check", "embedding", "lexical"} and pair["reason"]
    assert consensus["escalated"] == (consensus["consistency"] < consensus["threshold"])


def test_errors_are_openai_shaped_end_to_end(orchestra: Orchestra) -> None:
    with pytest.raises(openai.NotFoundError):
        orchestra.sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        orchestra.sdk.with_options(api_key="sk-wrong").models.list()
    with pytest.raises(openai.BadRequestError) as bad:
        orchestra.sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], top_p=7)
    assert bad.value.body["param"] == "top_p"  # type: ignore[index]


def test_the_dashboard_shows_the_running_orchestra_live(orchestra: Orchestra, tmp_path: Path) -> None:
    """The monitor's page in headless chromium: both hosts' cards with the real models stacked, the models'
    tokens/s charted, the Together spend of the requests above as /metrics has it; a screenshot is kept."""
    port = int(re.findall(r"dashboard on http://127\.0\.0\.1:(\d+)/dashboard", orchestra.monitor.output())[0])
    orchestra.sdk.chat.completions.create(
        model="together/llama3.1-70b", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )

    async def spent() -> float:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        return float(re.findall(r"^orchestra_spend_today_usd (\S+)$", text, re.M)[0])

    async def look() -> None:
        async with Chromium.open(f"http://127.0.0.1:{port}/dashboard", tmp_path) as page:
            await page.wait_for("document.body.dataset.charts === 'ready' && document.body.dataset.live === 'live'")
            cards = await page.wait_for("[...document.querySelectorAll('[data-card]')].map(c => c.dataset.card)")
            assert sorted(cards) == ["cpu0/cpu0", "cpu1/cpu1"]
            stacked = "[...document.querySelectorAll('[data-card] .seg')].map(s => s.title.split('#')[0])"
            assert {"smollm2-135m", "gemma3-270m"} <= set(await page.evaluate(stacked))
            await page.wait_for("document.querySelector('[data-chart=tokens]').dataset.series.includes('smollm2-135m')")
            figure = "Number(document.querySelector('[data-figure=spend_today_usd]').dataset.value)"

            async def same_spend() -> bool:  # the page and /metrics agree, once the paid answer is counted
                before, shown, after = await spent(), await page.evaluate(figure), await spent()
                return before == after > 0 and shown == pytest.approx(before, rel=1e-9)

            await eventually(same_spend, timeout=15)
            await page.screenshot(REPO / "bench" / "results" / "dashboard-e2e.png")

    asyncio.run(look())


def test_a_gpu_host_killed_mid_request_fails_over_with_one_answer(orchestra: Orchestra) -> None:
    """kill -9 of the host generating the answer: the router sees its heartbeat stop and moves the
    request to the other host; the client gets one answer and one outcome is stored."""
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["reply"] = orchestra.sdk.chat.completions.create(
                model="smollm2-135m",
                messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                max_tokens=400,
                temperature=0,
            )
        except Exception as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    victim = _generating_host(orchestra)
    orchestra.hosts[victim].kill()
    thread.join(180)
    assert "error" not in result, result.get("error")
    reply = result["reply"]
    ext = extension(reply)
    assert ext["target"] != victim and ext["tier"] == "local"
    assert reply.choices[0].message.content  # type: ignore[attr-defined]

    async def stored() -> int:
        nc = await nats.connect(orchestra.nats_url, **orchestra.server.connect_options())
        try:
            return await outcomes_stored(nc, str(ext["request_id"]))
        finally:
            await nc.close()

    assert asyncio.run(stored()) == 1


def _generating_host(orchestra: Orchestra, timeout: float = 60.0) -> str:
    """The host whose state says it is generating (in_flight > 0)."""
    from bus import subjects
    from bus.kv import TypedKV
    from schemas.codec import Codec
    from schemas.state import HostState

    async def busy() -> str | None:
        nc = await nats.connect(orchestra.nats_url, **orchestra.server.connect_options())
        try:
            kv = await TypedKV.open(nc.jetstream(), subjects.KV_HOSTS, Codec(HostState))
            for name, state in (await kv.items()).items():
                if any(m.in_flight > 0 for m in state.models):
                    return name
            return None
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        host = asyncio.run(busy())
        if host:
            return host
        time.sleep(0.1)
    raise AssertionError("no host reported a generation in flight")
