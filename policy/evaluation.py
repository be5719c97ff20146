"""Evaluators scoring generator output (the paper's phase 3: "specialized test evaluation"), pure.

    names = evaluators(cfg, phase)                       # the phase's evaluator models, in order
    req = evaluation_request(task_text, answer, model=names[0])  # an ordinary GenerateRequest
    ... publish it like any request, read its result ...
    verdict = read_verdict(result.text)                  # Verdict(score=1..5, reason=...) or EvaluationError

The evaluator is an instruct model used as a judge: a rubric in the system turn, the task and the answer
in the user turn, and a JSON Schema as ``response_format`` — on llama.cpp the answer is sampled under
the grammar built from it, so it always parses: the reason is held to 60 characters, so the whole verdict
fits the default 96 tokens even at one token per character. Temperature 0: the same answer gets the same
score. The seed's CodeT5 / GraphCodeBERT evaluators cannot run on the engine
(no encoder path in llama-cpp-python's ``Llama``), so the profiles name decoder-only models here.

Errors: EvaluationError (the evaluator's text is not a verdict) < ValueError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemas.config.root import OrchestraConfig
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, ResponseFormat, Sampling, make_request

SCORES = (1, 2, 3, 4, 5)
MAX_ANSWER_CHARS = 6000  # an answer longer than this is cut (the judge's context is small)
VERDICT_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "enum": list(SCORES)},
            "reason": {"type": "string", "maxLength": 60},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }
)
RUBRIC = """You grade answers to programming tasks. Score the answer from 1 to 5:
5 = correct, complete and idiomatic; 4 = correct with minor flaws; 3 = partly correct;
2 = mostly wrong or incomplete; 1 = wrong, off-topic or empty.
Reply with JSON only: {"score": <1-5>, "reason": "<one short sentence>"}."""


class EvaluationError(ValueError):
    """The evaluator's text is not a verdict (cut by max_tokens, or a model without a grammar)."""


@dataclass(frozen=True)
class Verdict:
    score: int
    reason: str


def evaluators(cfg: OrchestraConfig, phase: str) -> list[str]:
    """The models that score generator output in this phase (``phases.<name>.evaluators``)."""
    p = cfg.phases.get(phase)
    return list(p.evaluators) if p else []


def evaluation_request(
    task_text: str, answer: str, *, model: str, max_tokens: int = 96, timeout_s: float = 120.0, **fields: object
) -> GenerateRequest:
    """The judge's request for one answer; ``fields`` (client_key, task, tags, ...) go on the request."""
    user = f"Task:\n{task_text}\n\nAnswer:\n{answer[:MAX_ANSWER_CHARS]}\n\nGrade the answer."
    return make_request(
        messages=[ChatMessage(role="system", content=RUBRIC), ChatMessage(role="user", content=user)],
        model=model,
        timeout_s=timeout_s,
        sampling=Sampling(
            temperature=0.0,
            max_tokens=max_tokens,
            response_format=ResponseFormat(type="json_schema", name="verdict", json_schema=VERDICT_SCHEMA),
        ),
        cache=CachePolicy(no_store=True),
        **fields,  # type: ignore[arg-type]  # GenerateRequest's own fields, checked on decode
    )


def read_verdict(text: str) -> Verdict:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise EvaluationError(f"not JSON: {text[:80]!r}") from exc
    if not isinstance(doc, dict):
        raise EvaluationError("not a JSON object")
    score, reason = doc.get("score"), doc.get("reason", "")
    if isinstance(score, bool) or score not in SCORES:
        raise EvaluationError(f"score {score!r} is not one of {SCORES}")
    if not isinstance(reason, str):
        raise EvaluationError("reason is not a string")
    return Verdict(score=int(score), reason=reason)
