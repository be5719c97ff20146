"""``python -m actors.cache`` as a real process: serves lookups end to end, builds its model on first
start, and refuses to start on a corrupt model with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bus import subjects
from bus.server import EmbeddedNats
from bus.service import call
from schemas.cache import CACHE_REPLY, CacheLookup, CacheReply
from schemas.codec import encode
from schemas.request import ChatMessage, GenerateRequest, Sampling, make_request
from schemas.result import GenerateResult
from tests.support.minilm import copy_model
from tests.support.procs import ActorProcess
from tests.support.profile import write_profile
from tests.support.wait import eventually
from weights.minilm import VECTOR_SPACE

pytestmark = pytest.mark.slow


def ask(text: str) -> GenerateRequest:
    return make_request(
        messages=[ChatMessage(role="user", content=text)], model="smollm2-135m", sampling=Sampling(temperature=0)
    )


async def lookup(nc: NATS, req: GenerateRequest) -> CacheReply:
    return await call(nc, subjects.SVC_CACHE_LOOKUP, CacheLookup(request=req), CACHE_REPLY, timeout=5)


async def test_cache_process_answers_a_paraphrase_after_a_stored_result(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, processes: list[ActorProcess]
) -> None:
    """First start builds the model under data_dir; a miss, its result on orch.result.<id>, then a
    paraphrase comes back cached with its similarity; SIGTERM exits 0."""
    data = tmp_path / "data"
    profile = write_profile(tmp_path / "profile", nats_server.url, data_dir=data)
    proc = ActorProcess("actors.cache", profile)
    processes.append(proc.start())
    proc.wait_log("cache started", timeout=60)
    assert (data / "minilm" / "model.onnx").is_file() and (data / "qdrant" / VECTOR_SPACE / "index.sqlite3").is_file()

    first = ask("How do I merge two dictionaries in Python?")
    assert (await lookup(nc, first)).remembered
    result = GenerateResult(
        request_id=first.id,
        text="{**a, **b} or a | b",
        model="smollm2-135m",
        family="smollm",
        tier="local",
        target="cpu0",
    )
    await nc.jetstream().publish(subjects.result(first.id), encode(result), headers={"Nats-Msg-Id": first.id})

    paraphrase = ask("How can I merge two dictionaries in Python?")
    reply = await eventually(lambda: _hit(nc, paraphrase), timeout=15)
    assert reply.layer == "semantic" and reply.result is not None
    assert reply.result.cached and reply.result.request_id == paraphrase.id and reply.result.text == result.text
    assert reply.similarity is not None and reply.similarity >= 0.95 and reply.result.similarity == reply.similarity
    assert proc.terminate() == 0


async def _hit(nc: NATS, req: GenerateRequest) -> CacheReply | None:
    reply = await lookup(nc, req)
    return reply if reply.hit else None


def test_corrupt_model_stops_the_actor_with_a_clear_error(
    tmp_path: Path, nats_server: EmbeddedNats, processes: list[ActorProcess]
) -> None:
    """A damaged model.onnx: the process exits 1 and says which file is corrupt and what to do."""
    model = copy_model(tmp_path / "minilm")
    (model / "model.onnx").write_bytes((model / "model.onnx").read_bytes()[:1000])
    profile = write_profile(
        tmp_path / "profile", nats_server.url, overrides={"cache": {"semantic": {"model_dir": str(model)}}}
    )
    proc = ActorProcess("actors.cache", profile)
    processes.append(proc.start())
    assert proc.proc is not None
    assert proc.proc.wait(60) == 1
    out = proc.output()
    assert f"{model / 'model.onnx'} is corrupt" in out and f"delete {model}" in out
