"""Evaluators scoring generator output, pure: the judge's request, reading its verdict, the phase's
evaluators, and the config check that refuses an evaluator that cannot produce a verdict."""

from __future__ import annotations

import json

import msgspec
import pytest

from policy.evaluation import EvaluationError, Verdict, evaluation_request, evaluators, read_verdict
from schemas.config import load_config
from schemas.config.check import problems
from schemas.config.models import LocalModel

LAB = load_config("lab")
LOCAL = load_config("local")


def test_phase_3_names_evaluators_that_run_on_llama_cpp() -> None:
    """The lab's phase-3 evaluators (and its test_generation route) are decoder-only llama.cpp models."""
    names = evaluators(LAB, "phase_3_interactive_feedback")
    assert names and evaluators(LOCAL, "phase_3_interactive_feedback") == ["smollm2-135m"]
    route = LAB.routes["test_generation"]
    for name in [*names, route.primary]:
        model = LAB.models[name]
        assert isinstance(model, LocalModel) and model.engine == "llama_cpp"
    assert not any("codet5" in n or "graphcodebert" in n for n in LAB.models)
    assert evaluators(LAB, "no-such-phase") == []


def test_the_judge_request_carries_the_rubric_the_answer_and_a_verdict_schema() -> None:
    req = evaluation_request("Reverse a string", "def r(s): return s[::-1]", model="smollm2-135m", task="t1")
    assert req.model == "smollm2-135m" and req.task == "t1" and req.sampling.temperature == 0.0
    assert req.messages is not None and "Score the answer from 1 to 5" in req.messages[0].content
    assert "s[::-1]" in req.messages[1].content and "Reverse a string" in req.messages[1].content
    fmt = req.sampling.response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None
    assert json.loads(fmt.json_schema)["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert req.cache.no_store


def test_verdicts_are_read_and_anything_else_is_a_typed_error() -> None:
    assert read_verdict('{"score": 4, "reason": "works"}') == Verdict(score=4, reason="works")
    for bad in ('{"score": 9, "reason": "x"}', '{"score": true}', "[4]", '{"score": 3, "reason": 1}', '{"score": 4'):
        with pytest.raises(EvaluationError):
            read_verdict(bad)


def test_an_evaluator_must_be_a_library_model_that_can_sample_a_verdict() -> None:
    phase = LOCAL.phases["phase_3_interactive_feedback"]
    ctrans = msgspec.structs.replace(LOCAL.models["smollm2-135m"], engine="ctransformers", model_type="gpt2")
    cfg = msgspec.structs.replace(
        LOCAL,
        models={**LOCAL.models, "old-gpt2": ctrans},
        phases={
            **LOCAL.phases,
            "phase_3_interactive_feedback": msgspec.structs.replace(phase, evaluators=["codet5-large", "old-gpt2"]),
        },
    )
    found = {p.path: p.message for p in problems(cfg)}
    assert "unknown model 'codet5-large'" in found["phases.phase_3_interactive_feedback.evaluators[0]"]
    assert "no grammar" in found["phases.phase_3_interactive_feedback.evaluators[1]"]
