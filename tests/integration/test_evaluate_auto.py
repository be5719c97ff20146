"""Phase 3's automatic grading with real processes: a router, a diversity_monitor and a gpu_host running the
real SmolLM2 (the phase's evaluator) and Gemma 3 (the generator) on llama.cpp, each under its own role's
permissions. With ``evaluate_share: 1.0`` one generator request is answered by Gemma, the monitor asks
SmolLM2 to grade it as an ordinary request of its own origin (``mon``), and records the verdict: an
``evaluation.scored`` event with a parsed score, orchestra_evaluator_score, and a check in orch_quality."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bus import subjects
from bus.kv import TypedKV
from schemas.codec import REQUEST, Codec
from schemas.events import EvaluationScored
from schemas.request import ChatMessage, Requirements, Sampling, make_request
from schemas.result import GenerateResult
from schemas.review import ModelQuality
from tests.support.actors import Actors
from tests.support.client import ask
from tests.support.events import Recorder
from tests.support.gpu_host import HOST, host_profile
from tests.support.wait import eventually

pytestmark = pytest.mark.slow
PHASE = "phase_3_interactive_feedback"


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # noqa: S310 (loopback)
        return str(r.read().decode())


async def test_the_monitor_has_the_phase_evaluator_grade_a_generator_answer(
    tmp_path: Path, nc: NATS, actors: Actors
) -> None:
    profile = host_profile(
        tmp_path / "profile",
        actors.server.url,
        {},
        real_models="hot",
        overrides={
            "data_dir": str(tmp_path / "data"),
            "rotator": {"initial_phase": PHASE},
            "phases": {PHASE: {"evaluate_share": 1.0}},
            "cache": {"enabled": False},
            "router": {"attempt_timeout": "150s"},
        },
    )
    await actors.process("actors.gpu_host", profile, "--host", HOST, ready="gpu_host started", timeout=120)
    await actors.process("actors.router", profile, ready="router started", timeout=120)
    monitor = await actors.process("actors.diversity_monitor", profile, ready="diversity_monitor started", timeout=120)
    port = int(re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", monitor.output())[0])
    rec = await Recorder.listen(nc, "evaluation.scored")
    task = "Write a Python function that reverses a string."
    request = make_request(
        messages=[ChatMessage(role="user", content=task)],
        model="gemma3-270m",
        requirements=Requirements(tiers=["local"]),
        sampling=Sampling(temperature=0.0, max_tokens=48),
        timeout_s=180,
    )
    result = await ask(nc, request, timeout=180)
    assert isinstance(result, GenerateResult) and result.model == "gemma3-270m" and result.text.strip(), result

    (event,) = await eventually(lambda: rec.of(EvaluationScored), timeout=240)
    assert (event.request_id, event.model, event.evaluator) == (request.id, "gemma3-270m", "smollm2-135m")
    assert event.score in (1, 2, 3, 4, 5) and event.agreed is (event.score >= 4)
    print(f"SmolLM2 scored Gemma's answer {event.score}/5: {event.reason!r}")
    # the monitor asked as an ordinary request of its own origin: SmolLM2, the rubric, Gemma's answer
    stored = await nc.jetstream().get_last_msg("REQUESTS", subjects.request("low", event.evaluation_id, "mon"))
    judge = REQUEST.decode(stored.data or b"")
    assert judge.model == "smollm2-135m" and judge.messages is not None
    assert task in judge.messages[1].content and result.text[:40] in judge.messages[1].content

    quality = await TypedKV.open(nc.jetstream(), subjects.KV_QUALITY, Codec(ModelQuality))
    gemma = await eventually(lambda: quality.get("gemma3-270m"), timeout=20)
    assert (gemma.evaluated, gemma.approved) == (1, int(event.agreed))
    assert gemma.recent == [1.0 if event.agreed else 0.0] and (gemma.compared, gemma.accepted) == (0, 0)
    assert await quality.get("smollm2-135m") is None  # the evaluator's verdict was not graded in turn

    text = metrics(port)
    assert 'orchestra_evaluator_score_count{model="gemma3-270m"} 1.0' in text
    assert 'orchestra_evaluations_total{result="scored"} 1.0' in text
