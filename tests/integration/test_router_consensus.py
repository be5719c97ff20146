"""The router's ensemble consensus on a real nats-server: scripted answers, the real cache serving MiniLM
vectors, the real sandbox running code answers; the escalation event still goes out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from actors.cache.actor import CacheActor
from actors.router.actor import Router
from bus.server import EmbeddedNats
from schemas.codec import EVENT
from schemas.events import Escalated
from schemas.request import ChatMessage, GenerateRequest, make_request
from schemas.result import GenerateResult
from tests.support.actors import Actors
from tests.support.client import ask, gather_events
from tests.support.minilm import model_dir
from tests.support.profile import test_config
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}
Start = Callable[..., Awaitable[ScriptedWorker]]


@pytest.fixture
def orchestra(tmp_path: Path, nats_server: EmbeddedNats, actors: Actors) -> Start:
    """A scripted worker and a router in-process, with a cache actor (MiniLM) when asked (stopped by ``actors``)."""
    cfg = test_config(
        tmp_path / "profile",
        nats_server.url,
        overrides={"router": {"attempt_timeout": "10s"}, "cache": {"semantic": {"model_dir": str(model_dir())}}},
    )

    async def start(*, cache: bool = False, **worker: Any) -> ScriptedWorker:
        if cache:
            await actors.start(CacheActor(cfg, instance="consensus-cache"))
        w = await actors.start(ScriptedWorker(cfg, **worker))
        router = await actors.start(Router(cfg, instance="consensus-router"))
        await eventually(lambda: router.view.hosts.data)
        return w

    return start


def chat(text: str) -> GenerateRequest:
    return make_request(
        messages=[ChatMessage(role="user", content=text)], timeout_s=60, mode="ensemble", model="ensemble"
    )


async def test_paris_and_not_paris_escalate_with_the_reason(orchestra: Start, nc: NATS) -> None:
    """Word overlap called these agreeing; now they contradict, the result says why, and the
    escalation event goes out as before. Without logprobs, confidence is the labelled configured rank."""
    events: list[bytes] = []
    await gather_events(nc, "orch.event.ensemble.escalated", events)
    await orchestra(hosts=LOCAL, answers={"smollm2-135m": "Paris", "gemma3-270m": "not Paris"})
    outcome = await ask(nc, chat("What is the capital of France?"))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    assert outcome.consensus.escalated and outcome.consensus.consistency < 0.7
    (pair,) = outcome.consensus.pairs
    assert not pair.agree and pair.method == "contradiction" and "negation" in pair.reason
    assert {r.confidence_source for r in outcome.responses} == {"configured_rank"}
    escalated = await eventually(lambda: [EVENT.decode(e) for e in events])
    assert isinstance(escalated[0], Escalated) and escalated[0].request_id == outcome.request_id


async def test_paraphrases_agree_by_minilm_similarity_from_the_cache(orchestra: Start, nc: NATS) -> None:
    """Two wordings no check decides: the router asks the cache for vectors and they agree."""
    await orchestra(
        cache=True,
        hosts=LOCAL,
        answers={
            "smollm2-135m": "Unit tests catch regressions early and document how code should behave.",
            "gemma3-270m": "They find bugs quickly when code changes and serve as living documentation.",
        },
    )
    outcome = await ask(nc, chat("Summarise the benefits of unit tests."))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    (pair,) = outcome.consensus.pairs
    assert pair.method == "embedding" and pair.agree and 0.46 <= pair.score < 1.0
    assert not outcome.consensus.escalated


async def test_code_answers_are_compared_by_running_the_prompts_examples(orchestra: Start, nc: NATS) -> None:
    """Both define reverse_string; one is wrong on 'abc': the sandbox shows it, the vote escalates."""
    await orchestra(
        hosts=LOCAL,
        answers={
            "smollm2-135m": "```python\ndef reverse_string(s):\n    return s[::-1]\n```",
            "gemma3-270m": "```python\ndef reverse_string(s):\n    return s[1:]\n```",
        },
    )
    outcome = await ask(nc, chat("Write reverse_string(s).\n>>> reverse_string('abc')\n'cba'"))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    (pair,) = outcome.consensus.pairs
    assert pair.method == "behaviour" and not pair.agree and "reverse_string('abc')" in pair.reason
    assert outcome.consensus.escalated


async def test_dense_answers_over_minilms_length_are_embedded_shortened(orchestra: Start, nc: NATS) -> None:
    """600 characters of symbols are 600 MiniLM tokens: the cache refuses them, the router asks again
    with a third of each answer instead of falling back to word overlap."""
    dense = "=-" * 300
    await orchestra(cache=True, hosts=LOCAL, answers={"smollm2-135m": dense, "gemma3-270m": dense})
    outcome = await ask(nc, chat("Draw a line."))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    (pair,) = outcome.consensus.pairs
    assert pair.method == "embedding" and pair.agree
