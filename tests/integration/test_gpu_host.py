"""The gpu_host against a real nats-server and real llama.cpp, on the tiny random llama GGUF (in-process)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors.gpu_host.actor import HOST_STATE, GpuHost
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from schemas.codec import CHUNK
from schemas.commands import LoadModel, SwapModels, UnloadModel
from schemas.config import load_config
from schemas.events import ModelKeepAlive, ModelLoaded, ModelLoadFailed, ModelSwap, ModelUnloaded, Oom
from schemas.result import GenerateResult, StreamChunk
from tests.support.actors import Actors
from tests.support.events import Recorder
from tests.support.gpu_host import (
    HOST,
    count,
    dispatch,
    failure,
    host_profile,
    outcome,
    request,
    result,
    stored,
    tiny_entry,
)
from tests.support.tiny_models import write_tiny_gpt2_ggml, write_tiny_llama_gguf
from tests.support.wait import eventually


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


def _size(path: Path) -> int:
    return path.stat().st_size


async def start_host(profile: Path, actors: Actors) -> GpuHost:
    return await actors.start(GpuHost(load_config(profile), host=HOST))


@pytest.fixture
async def events(nc: NATS) -> Recorder:
    return await Recorder.listen(nc)


@pytest.fixture
async def host(tmp_path: Path, nats_server: EmbeddedNats, actors: Actors, tiny_gguf: Path) -> GpuHost:
    models = {
        "tiny": tiny_entry(tiny_gguf),
        "tiny-b": tiny_entry(tiny_gguf, family="tiny-b"),
        "tiny-chat": tiny_entry(tiny_gguf, chat_format="chatml"),
        "huge-context": tiny_entry(tiny_gguf, context_length=2**24, max_batch_size=1),
        "missing": tiny_entry(tmp_path / "no-such.gguf", source={"kind": "path", "path": "no-such.gguf"}),
    }
    return await start_host(host_profile(tmp_path / "profile", nats_server.url, models), actors)


async def test_completion_is_answered_once_with_usage_cost_and_provenance(host: GpuHost, nc: NATS) -> None:
    """A dispatched completion gets one GenerateResult: text, usage, local tier, target, cost, timings."""
    req = request("the cat sat on the mat", max_tokens=16, temperature=0.0)
    await dispatch(nc, "tiny", req)
    res = await result(nc, req.id)
    assert res.text and res.model == "tiny" and res.family == "tiny"
    assert (res.tier, res.target, res.finish_reason) == ("local", HOST, "length")
    assert res.usage.output_tokens == 16 and res.usage.input_tokens > 0
    assert res.cost_usd > 0 and res.client_key == "key-1" and res.task == "task-1"
    assert res.provenance is not None and res.provenance.temperature == 0.0 and res.provenance.top_p == 1.0
    assert res.timings.generation_ms > 0 and res.timings.total_ms >= res.timings.generation_ms
    assert await count(nc, subjects.result(req.id)) == 1


async def test_streamed_chunks_add_up_to_the_result(host: GpuHost, nc: NATS) -> None:
    """With stream=true the chunks on orch.stream.<id> join to the final text; the last one says done."""
    chunks: list[StreamChunk] = []

    async def on(msg: Msg) -> None:
        chunks.append(CHUNK.decode(msg.data))

    req = request("one two three", stream=True, max_tokens=24, temperature=0.0)
    await nc.subscribe(subjects.chunks(req.id), cb=on)
    await dispatch(nc, "tiny", req)
    res = await result(nc, req.id)
    await eventually(lambda: chunks and chunks[-1].done)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == res.text
    assert chunks[-1].finish_reason == "length"


async def test_stop_sequence_ends_the_text_before_it(host: GpuHost, nc: NATS) -> None:
    """A stop string seen in the output ends generation there, finish_reason stop, stop string excluded."""
    first = request("hello world", max_tokens=40, temperature=0.0)
    await dispatch(nc, "tiny", first)
    full = (await result(nc, first.id)).text
    stop = full[10:13]
    cut = full.index(stop)
    again = request("hello world", max_tokens=40, temperature=0.0, stop=[stop])
    await dispatch(nc, "tiny", again)
    res = await result(nc, again.id)
    assert res.text == full[:cut] and res.finish_reason == "stop"


async def test_same_seed_gives_the_same_text_when_sampling(host: GpuHost, nc: NATS) -> None:
    """At temperature 1 a seed fixes the output; other seeds give other outputs."""
    reqs = [request("the sun", max_tokens=20, temperature=1.0, seed=s) for s in (7, 7, 8, 9)]
    for r in reqs:
        await dispatch(nc, "tiny", r)
    texts = [(await result(nc, r.id)).text for r in reqs]
    assert texts[0] == texts[1]
    assert texts[2] != texts[0] or texts[3] != texts[0]


async def test_concurrent_requests_are_batched_with_the_same_output_as_alone(host: GpuHost, nc: NATS) -> None:
    """Requests sent together are decoded in one batch (peak > 1) and give exactly the unbatched text."""
    prompts = ["the cat", "a dog ran", "red blue green", "one two", "big small tree", "the moon and stars"]
    alone = []
    for p in prompts:
        r = request(p, max_tokens=32, temperature=0.0)
        await dispatch(nc, "tiny", r)
        alone.append((await result(nc, r.id)).text)
    together = [request(p, max_tokens=32, temperature=0.0) for p in prompts]
    await asyncio.gather(*(dispatch(nc, "tiny", r) for r in together))
    texts = [(await result(nc, r.id)).text for r in together]
    assert texts == alone
    assert host.manager.residents["tiny"].engine.peak_batch > 1


async def test_too_long_prompt_is_a_context_too_long_failure(host: GpuHost, nc: NATS) -> None:
    """prompt + max_tokens past the model's context: a typed failure for the router, no result."""
    req = request("the cat sat " * 200, max_tokens=64)
    await dispatch(nc, "tiny", req)
    failed = await failure(nc, req.id)
    assert failed.error.code == "context_too_long" and "256" in failed.error.message
    assert failed.target == HOST and failed.model == "tiny" and failed.client_key == "key-1"
    assert await stored(nc, subjects.result(req.id)) is None


async def test_expired_request_is_a_timeout_failure(host: GpuHost, nc: NATS) -> None:
    """A dispatch that arrives after its deadline is not generated: timeout."""
    req = msgspec.structs.replace(request("late"), deadline=time.time() - 1)
    await dispatch(nc, "tiny", req)
    assert (await failure(nc, req.id)).error.code == "timeout"


async def test_unknown_model_and_missing_file_are_unavailable(host: GpuHost, nc: NATS, events: Recorder) -> None:
    """A model the library lacks, or whose file is missing, fails as unavailable and names where it looked."""
    unknown, missing = request("x"), request("x")
    await dispatch(nc, "nope", unknown)
    await dispatch(nc, "missing", missing)
    assert (await failure(nc, unknown.id)).error.code == "unavailable"
    lost = await failure(nc, missing.id)
    assert lost.error.code == "unavailable" and "no-such.gguf" in lost.error.message
    await eventually(lambda: events.of(ModelLoadFailed, model="missing"))


async def test_redelivered_dispatch_with_a_stored_result_is_not_generated_again(
    host: GpuHost, nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    """The same request dispatched again after its result is stored: skipped, still one result."""
    caplog.set_level("INFO")
    req = request("two three", max_tokens=8, temperature=0.0)
    await dispatch(nc, "tiny", req)
    await result(nc, req.id)
    await dispatch(nc, "tiny", req, attempt=1)
    await eventually(lambda: "already has a result" in caplog.text)
    assert await count(nc, subjects.result(req.id)) == 1


async def test_load_past_the_budget_is_refused_before_trying_with_an_oom_event(
    host: GpuHost, nc: NATS, events: Recorder
) -> None:
    """A KV cache of 2^24 tokens cannot fit 1.5 GB: refused by accounting (no load), oom event with sizes."""
    req = request("x", max_tokens=4)
    await dispatch(nc, "huge-context", req)
    failed = await failure(nc, req.id)
    assert failed.error.code == "oom"
    oom = (await eventually(lambda: events.of(Oom, model="huge-context")))[0]
    assert oom.card == HOST and oom.total_bytes == 1_500_000_000
    assert oom.requested_bytes > oom.total_bytes >= oom.free_bytes
    assert not events.of(ModelLoaded, model="huge-context")


async def test_chat_messages_use_the_configured_chat_format(host: GpuHost, nc: NATS) -> None:
    """A chat request is formatted with the library's chat_format (chatml adds its role markers)."""
    from schemas.request import ChatMessage

    chat = request(messages=[ChatMessage(role="user", content="hi")], max_tokens=4, temperature=0.0)
    plain = request("hi", max_tokens=4, temperature=0.0)
    await dispatch(nc, "tiny-chat", chat)
    await dispatch(nc, "tiny-chat", plain)
    formatted, raw = await result(nc, chat.id), await result(nc, plain.id)
    assert formatted.usage.input_tokens > raw.usage.input_tokens + 10  # <|im_start|>user ... assistant


async def test_host_state_in_kv_lists_models_memory_and_heartbeat(host: GpuHost, nc: NATS) -> None:
    """orch_hosts[cpu0]: up, the card's budget and use, the loaded model with bytes and load time; heartbeats."""
    req = request("the", max_tokens=4)
    await dispatch(nc, "tiny", req)
    await result(nc, req.id)
    kv = await TypedKV.open(nc.jetstream(), subjects.KV_HOSTS, HOST_STATE)

    async def loaded() -> object:
        state = await kv.get(HOST)
        return state if state and any(m.model == "tiny" for m in state.models) else None

    state = await eventually(loaded)
    assert state.up and state.cards[0].total_bytes == 1_500_000_000 and state.cards[0].used_bytes > 0
    tiny = next(m for m in state.models if m.model == "tiny")
    assert tiny.bytes > 400_000 and tiny.cards == [HOST] and tiny.load_ms > 0 and tiny.keep_alive == "warm"
    first = state.heartbeat_at
    await eventually(lambda: _later(kv, first))


async def _later(kv: TypedKV, t: float) -> bool:
    state = await kv.get(HOST)
    return bool(state and state.heartbeat_at > t)


async def test_load_and_unload_commands_publish_events(host: GpuHost, nc: NATS, events: Recorder) -> None:
    """orch.cmd.host.cpu0.load / .unload: the model is loaded / unloaded, with events."""
    await host.send(LoadModel(host=HOST, model="tiny-b", keep_alive="hot", reason="test"))
    loaded = (await eventually(lambda: events.of(ModelLoaded, model="tiny-b")))[0]
    assert loaded.reason == "test" and loaded.bytes > 0 and loaded.cards == [HOST]
    assert host.manager.residents["tiny-b"].keep_alive == "hot"
    await host.send(UnloadModel(host=HOST, model="tiny-b"))
    (unloaded,) = await eventually(lambda: events.of(ModelUnloaded, model="tiny-b"))
    assert "tiny-b" not in host.manager.residents
    assert unloaded.bytes == loaded.bytes and unloaded.unload_ms > 0 and unloaded.drain_ms >= 0


async def test_a_keep_alive_change_on_a_loaded_model_is_an_event_and_in_the_state(
    host: GpuHost, nc: NATS, events: Recorder
) -> None:
    """A load command for a model already loaded, kept otherwise (hot -> warm, as a rotation asks): no reload,
    a model.keep_alive event with both tiers, and the host's state in KV shows the new tier; asking again for
    the same tier changes nothing and says nothing."""
    await host.send(LoadModel(host=HOST, model="tiny-b", keep_alive="hot", reason="pick"))
    await eventually(lambda: events.of(ModelLoaded, model="tiny-b"))
    await host.send(LoadModel(host=HOST, model="tiny-b", keep_alive="warm", reason="rotated out"))
    kept = (await eventually(lambda: events.of(ModelKeepAlive, model="tiny-b")))[0]
    assert (kept.host, kept.previous, kept.keep_alive, kept.reason) == (HOST, "hot", "warm", "rotated out")
    kv = await TypedKV.open(nc.jetstream(), subjects.KV_HOSTS, HOST_STATE)

    async def shown_warm() -> bool:
        state = await kv.get(HOST)
        return state is not None and any(m.model == "tiny-b" and m.keep_alive == "warm" for m in state.models)

    await eventually(shown_warm, timeout=5)
    await host.send(LoadModel(host=HOST, model="tiny-b", keep_alive="warm", reason="again"))
    await host.send(UnloadModel(host=HOST, model="tiny-b"))  # commands run in order: after the one above
    await eventually(lambda: events.of(ModelUnloaded, model="tiny-b"))
    assert len(events.of(ModelKeepAlive)) == 1 and len(events.of(ModelLoaded, model="tiny-b")) == 1


async def test_a_model_handed_a_request_is_neither_swept_nor_evicted_before_the_request_runs(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors, tiny_gguf: Path
) -> None:
    """A cold model loaded for a request is busy from the moment it is handed over, before the request
    reaches its engine: the keep-alive sweep keeps it, and a load that needs room evicts the warm model
    instead (cold ones otherwise go first); released, it is swept."""
    models = {
        "a": tiny_entry(tiny_gguf, family="a", keep_alive="cold"),
        "b": tiny_entry(tiny_gguf, family="b"),
        "c": tiny_entry(tiny_gguf, family="c"),
    }
    each = _size(tiny_gguf) + 256 * 256 * 4  # weights (about the file) + KV for 256 x 4
    actor = await start_host(host_profile(tmp_path / "p", nats_server.url, models, memory=str(int(each * 2.5))), actors)
    mgr = actor.manager
    a = await mgr.ensure_loaded("a", admit=True)  # what a dispatch does, before it submits to the engine
    assert a.engine.active + a.engine.queued == 0 and a.busy
    await mgr.sweep()
    assert "a" in mgr.residents
    await mgr.ensure_loaded("b")
    await mgr.ensure_loaded("c")  # room for two: one goes, and it is not the busy one
    assert set(mgr.residents) == {"a", "c"}
    a.release()
    await mgr.sweep()
    assert "a" not in mgr.residents


async def test_swap_under_load_loses_no_request(host: GpuHost, nc: NATS, events: Recorder) -> None:
    """Swapping tiny -> tiny-b while requests for both stream in: every request ends in one outcome."""
    reqs = [request(f"the cat {i}", max_tokens=48, temperature=0.0) for i in range(12)]
    for r in reqs[:6]:
        await dispatch(nc, "tiny", r)
    await host.send(SwapModels(host=HOST, unload=["tiny"], load=["tiny-b"], reason="rotation"))
    for i, r in enumerate(reqs[6:]):
        await dispatch(nc, "tiny" if i % 2 else "tiny-b", r)
    outcomes = [await outcome(nc, r.id) for r in reqs]
    assert all(isinstance(o, GenerateResult) for o in outcomes)
    assert [await count(nc, subjects.result(r.id)) for r in reqs] == [1] * len(reqs)
    swap = (await eventually(lambda: events.of(ModelSwap)))[0]
    assert swap.unloaded == ["tiny"] and swap.loaded == ["tiny-b"] and swap.swap_ms > 0


async def test_ctransformers_engine_serves_a_ggml_era_model(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """A GPT-2 in the old GGML format, through the ctransformers engine: one result, deterministic at t=0."""
    path = write_tiny_gpt2_ggml(tmp_path / "tiny-gpt2.bin")
    entry = tiny_entry(path, engine="ctransformers", model_type="gpt2", family="gpt2", max_batch_size=4)
    await start_host(host_profile(tmp_path / "profile", nats_server.url, {"gpt2-tiny": entry}), actors)
    reqs = [request(" the cat", max_tokens=8, temperature=0.0) for _ in range(2)]
    for r in reqs:
        await dispatch(nc, "gpt2-tiny", r)
    a, b = [await result(nc, r.id) for r in reqs]
    assert a.text == b.text and a.usage.output_tokens == 8 and a.family == "gpt2"


async def test_eviction_keeps_the_model_used_most(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors, tiny_gguf: Path
) -> None:
    """Room for two: A B A A C evicts B (used once), not A; A is then served without reloading."""
    models = {n: tiny_entry(tiny_gguf, family=n) for n in ("a", "b", "c")}
    each = _size(tiny_gguf) + 256 * 256 * 4  # weights (about the file) + KV for 256 x 4
    await start_host(host_profile(tmp_path / "p", nats_server.url, models, memory=str(int(each * 2.5))), actors)
    ev = await Recorder.listen(nc)
    for name in ["a", "b", "a", "a", "c", "a"]:
        r = request("the", max_tokens=2)
        await dispatch(nc, name, r)
        await result(nc, r.id)
    assert [e.model for e in ev.of(ModelUnloaded)] == ["b"]
    assert [e.model for e in ev.of(ModelLoaded)] == ["a", "b", "c"]


async def test_warm_model_is_unloaded_after_its_keep_alive(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors, tiny_gguf: Path
) -> None:
    """A warm model idle past keep_alive_ttl is unloaded; a hot one stays."""
    models = {
        "warm-one": tiny_entry(tiny_gguf, keep_alive="warm", keep_alive_ttl="1s"),
        "hot-one": tiny_entry(tiny_gguf, keep_alive="hot", keep_alive_ttl="1s"),
    }
    actor = await start_host(host_profile(tmp_path / "p", nats_server.url, models), actors)
    ev = await Recorder.listen(nc)
    await eventually(lambda: "hot-one" in actor.manager.residents)  # hot: loaded at start
    r = request("the", max_tokens=2)
    await dispatch(nc, "warm-one", r)
    await result(nc, r.id)
    unloaded = (await eventually(lambda: ev.of(ModelUnloaded, model="warm-one"), timeout=15))[0]
    assert "keep-alive" in unloaded.reason
    assert "hot-one" in actor.manager.residents
