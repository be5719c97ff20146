"""The gpu_host on the real small models from PyPI (SmolLM2-135M, Gemma 3 270M), and as a real process:
kill -9 mid-generation, a real llama.cpp allocation failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors.gpu_host.engine import GenParams, LoadSpec
from actors.gpu_host.llama_engine import LlamaCppEngine
from bus import subjects
from bus.server import EmbeddedNats
from policy.evaluation import evaluation_request, evaluators, read_verdict
from schemas.codec import EVENT
from schemas.config import load_config
from schemas.events import Oom
from schemas.request import ChatMessage
from tests.support.gpu_host import HOST, count, dispatch, failure, host_profile, request, result, tiny_entry
from tests.support.procs import ActorProcess
from tests.support.tiny_models import write_tiny_llama_gguf
from tests.support.wait import eventually
from weights.library import ModelLibrary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the session: Gemma is assembled from its chunk packages once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return ModelLibrary(load_config("local"), Path("/nonexistent")).resolve("smollm2-135m").path


@pytest.fixture
async def smollm2(smollm2_path: Path) -> AsyncIterator[LlamaCppEngine]:
    engine = LlamaCppEngine(LoadSpec(name="smollm2-135m", path=smollm2_path, context=512, batch=4))
    await engine.start()
    yield engine
    await engine.stop()


PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "The three primary colours are"]


async def test_smollm2_batched_equals_unbatched_at_temperature_0(smollm2: LlamaCppEngine) -> None:
    """Four requests decoded in one batch give exactly the text each gives alone (same seed, t=0)."""
    params = GenParams(max_tokens=24, temperature=0.0, seed=1)
    alone = [(await smollm2.submit(p, params, deadline=time.time() + 60).result()).text for p in PROMPTS]
    gens = [smollm2.submit(p, params, deadline=time.time() + 60) for p in PROMPTS]
    together = [(await g.result()).text for g in gens]
    assert together == alone and all(alone)
    assert smollm2.peak_batch == 4


async def test_gemma_batched_equals_unbatched_up_to_its_batch_size(shared_data: Path) -> None:
    """Gemma 3 270M at the local profile's max_batch_size (7): every batched greedy text equals the
    unbatched one (at 8 rows llama.cpp's CPU kernels for its Q4_K weights differ and outputs drift)."""
    cfg = load_config("local")
    model = cfg.local_models()["gemma3-270m"]
    path = ModelLibrary(cfg, shared_data).resolve("gemma3-270m").path
    engine = LlamaCppEngine(LoadSpec(name="gemma3-270m", path=path, context=256, batch=model.max_batch_size))
    await engine.start()
    try:
        prompts = [*PROMPTS, "Water boils at", "import numpy as np", "In 1492,"][: model.max_batch_size]
        params = GenParams(max_tokens=24, temperature=0.0)
        alone = [(await engine.submit(p, params, deadline=time.time() + 120).result()).text for p in prompts]
        gens = [engine.submit(p, params, deadline=time.time() + 120) for p in prompts]
        together = [(await g.result()).text for g in gens]
        assert together == alone and all(alone)
        assert engine.peak_batch == model.max_batch_size
    finally:
        await engine.stop()


async def test_a_request_joins_a_running_batch_at_the_next_step(smollm2: LlamaCppEngine) -> None:
    """Continuous batching: a request submitted while another generates starts before that one ends,
    and both texts equal their unbatched ones."""
    params = GenParams(max_tokens=48, temperature=0.0)
    alone = [(await smollm2.submit(p, params, deadline=time.time() + 60).result()).text for p in PROMPTS[:2]]
    first = smollm2.submit(PROMPTS[0], GenParams(max_tokens=48, temperature=0.0), deadline=time.time() + 60)
    await eventually(lambda: smollm2.active == 1, interval=0.005)
    second = smollm2.submit(PROMPTS[1], params, deadline=time.time() + 60)
    await eventually(lambda: smollm2.active == 2, interval=0.005)  # joined the running one
    late = await second.result()
    assert [(await first.result()).text, late.text] == alone


async def test_deadline_stops_a_generation_midway(smollm2: LlamaCppEngine) -> None:
    """A deadline that passes during generation ends it with finish_reason cancelled and the tokens so far."""
    gen = smollm2.submit(PROMPTS[2], GenParams(max_tokens=400, temperature=0.0), deadline=time.time() + 0.5)
    done = await gen.result()
    assert done.finish_reason == "cancelled" and 0 < done.output_tokens < 400


@pytest.fixture
def local_profile(tmp_path: Path, nats_server: EmbeddedNats, shared_data: Path) -> Path:
    """The local profile as shipped (both PyPI models hot), one thread, this test's nats-server."""
    return host_profile(
        tmp_path / "profile", nats_server.url, {}, real_models="hot", overrides={"data_dir": str(shared_data)}
    )


def start_host(profile: Path, processes: list[ActorProcess], **kw: str) -> ActorProcess:
    proc = ActorProcess("actors.gpu_host", profile, "--host", HOST, **kw).start()  # type: ignore[arg-type]
    processes.append(proc)
    proc.wait_log("gpu_host started", timeout=60)
    return proc


async def test_smollm2_chat_and_gemma_completion_through_the_host_process(
    local_profile: Path, nc: NATS, processes: list[ActorProcess]
) -> None:
    """`python -m actors.gpu_host --host cpu0` answers a chat on SmolLM2 (chatml) and a completion on Gemma 3
    (assembled from its PyPI chunk packages), with real text."""
    start_host(local_profile, processes)
    chat = request(
        messages=[ChatMessage(role="user", content="What is the capital of France?")], max_tokens=24, temperature=0.0
    )
    completion = request("The capital of France is", max_tokens=12, temperature=0.0)
    await dispatch(nc, "smollm2-135m", chat)
    await dispatch(nc, "gemma3-270m", completion)
    a, b = await result(nc, chat.id, timeout=90), await result(nc, completion.id, timeout=90)
    assert a.family == "smollm" and "Paris" in a.text and a.finish_reason == "stop"
    assert b.family == "gemma" and b.text.strip() and b.usage.output_tokens > 0


async def test_kill_9_during_generation_then_restart_gives_exactly_one_result(
    local_profile: Path, nc: NATS, processes: list[ActorProcess]
) -> None:
    """The host is killed while streaming; the dispatch was never acknowledged, so the restarted host
    generates it again and exactly one result is stored."""
    first = start_host(local_profile, processes)
    chunks: list[Msg] = []
    req = request("Once upon a time", stream=True, max_tokens=300, temperature=0.0, timeout_s=120)

    async def on(msg: Msg) -> None:
        chunks.append(msg)

    await nc.subscribe(subjects.chunks(req.id), cb=on)
    await dispatch(nc, "smollm2-135m", req)
    await eventually(lambda: len(chunks) >= 3, timeout=60)
    first.kill()
    start_host(local_profile, processes)
    res = await result(nc, req.id, timeout=120)
    assert res.usage.output_tokens > 0 and res.text
    await asyncio.sleep(1.0)  # a duplicate, if any, would be stored by now
    assert await count(nc, subjects.result(req.id)) == 1


async def test_real_llama_cpp_allocation_failure_becomes_an_oom_event(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, processes: list[ActorProcess]
) -> None:
    """A card budget larger than the machine lets a 4 GB KV cache past accounting; llama.cpp's allocation
    then really fails (the process runs under an address-space limit): oom event, typed failure, host lives."""
    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    models = {
        "tiny": tiny_entry(gguf),
        "big-cache": tiny_entry(gguf, context_length=2**24, max_batch_size=1),
    }
    profile = host_profile(tmp_path / "profile", nats_server.url, models, memory="64GB")
    ooms: list[Oom] = []

    async def on(msg: Msg) -> None:
        event = EVENT.decode(msg.data)
        if isinstance(event, Oom):
            ooms.append(event)

    await nc.subscribe("orch.event.oom", cb=on)
    env = {"LIMITED_MODULE": "actors.gpu_host", "LIMITED_AS_HEADROOM": str(3 * 10**9)}
    proc = ActorProcess("tests.support.limited", profile, "--host", HOST, env=env).start()
    processes.append(proc)
    proc.wait_log("gpu_host started", timeout=60)
    req = request("x", max_tokens=4)
    await dispatch(nc, "big-cache", req)
    failed = await failure(nc, req.id)
    assert failed.error.code == "oom" and "failed to allocate" in failed.error.message
    await eventually(lambda: ooms)
    assert ooms[0].model == "big-cache" and ooms[0].requested_bytes > 4 * 10**9 and "allocate" in ooms[0].detail
    after = request("the cat", max_tokens=4)
    await dispatch(nc, "tiny", after)
    assert (await result(nc, after.id)).usage.output_tokens == 4


async def test_smollm2_as_evaluator_scores_generator_output_with_a_verdict_that_parses(
    local_profile: Path, nc: NATS, processes: list[ActorProcess]
) -> None:
    """Phase 3's evaluator on the real engine: SmolLM2 (the local profile's evaluator) grades a Gemma answer
    and a wrong one through the rubric; each verdict is sampled under the schema's grammar and parses."""
    start_host(local_profile, processes)
    evaluator = evaluators(load_config(local_profile), "phase_3_interactive_feedback")[0]
    task = "Write a Python function to reverse a string."
    generated = request(messages=[ChatMessage(role="user", content=task)], max_tokens=48, temperature=0.0)
    await dispatch(nc, "gemma3-270m", generated)
    answer = (await result(nc, generated.id, timeout=120)).text
    verdicts = []
    for text in (answer, "The capital of France is Paris."):
        judge = evaluation_request(task, text, model=evaluator, client_key="key-1", task="eval-1")
        await dispatch(nc, evaluator, judge)
        out = await result(nc, judge.id, timeout=120)
        assert out.model == "smollm2-135m" and out.finish_reason == "stop", out.text
        verdicts.append(read_verdict(out.text))
    assert all(v.score in (1, 2, 3, 4, 5) and isinstance(v.reason, str) for v in verdicts)
