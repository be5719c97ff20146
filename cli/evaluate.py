"""``orchestra ask --evaluate``: the phase's evaluator grades every answer (phase 3's test evaluation).

After the answer (or every answer of a ``diverse`` / ``ensemble`` fan-out) arrives, each goes to an
evaluator model as an ordinary request built by :mod:`policy.evaluation` (a rubric, a JSON verdict
sampled under a grammar); the verdicts are printed with the answer's provenance. The evaluator is the
one ``--evaluate`` names, else the first of the current phase's ``evaluators`` (the rotator's phase in
KV, else ``rotator.initial_phase``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from actors.rotator.actor import PHASE_KEY
from bus import subjects
from bus.kv import Codec, TypedKV
from policy.evaluation import EvaluationError, Verdict, evaluation_request, evaluators, read_verdict
from schemas.codec import OUTCOME, encode
from schemas.config.root import OrchestraConfig
from schemas.request import GenerateRequest
from schemas.result import GenerateError, GenerateResult, Outcome
from schemas.state import PhaseState


@dataclass(frozen=True)
class Graded:
    label: str  # whose answer: model (family, T=..., variant)
    verdict: Verdict | None
    error: str | None = None


async def evaluator_for(js: Any, cfg: OrchestraConfig, named: str | None) -> str | None:
    if named:
        return named
    kv: TypedKV[PhaseState] = await TypedKV.open(js, subjects.KV_PHASE, Codec(PhaseState))
    state = await kv.get(PHASE_KEY)
    names = evaluators(cfg, state.phase if state else cfg.rotator.initial_phase)
    return names[0] if names else None


async def outcome_of(nc: Any, request: GenerateRequest, timeout: float) -> Outcome | None:
    """Publish one request and wait for its one outcome (None: nothing before the timeout)."""
    done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def on_result(msg: Any) -> None:
        if not done.done():
            done.set_result(OUTCOME.decode(msg.data))

    sub = await nc.subscribe(subjects.result(request.id), cb=on_result)
    try:
        await nc.jetstream().publish(
            subjects.request(request.priority, request.id), encode(request), headers={"Nats-Msg-Id": request.id}
        )
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return None
    finally:
        await sub.unsubscribe()


def answers(result: GenerateResult) -> list[tuple[str, str]]:
    if result.responses:
        return [
            (
                f"{r.provenance.model} ({r.provenance.family}, T={r.provenance.temperature}, "
                f"{r.provenance.prompt_variant or 'direct'})",
                r.text,
            )
            for r in result.responses
        ]
    return [(f"{result.model} ({result.family})", result.text)]


async def grade(nc: Any, task_text: str, result: GenerateResult, evaluator: str, timeout: float) -> list[Graded]:
    """Every answer of ``result`` graded by ``evaluator``, concurrently."""

    async def one(label: str, text: str) -> Graded:
        req = evaluation_request(task_text, text, model=evaluator, timeout_s=timeout, task=result.task)
        out = await outcome_of(nc, req, timeout + 2)
        if out is None:
            return Graded(label, None, f"no verdict within {timeout:g}s")
        if isinstance(out, GenerateError):
            return Graded(label, None, f"{out.error.code}: {out.error.message}")
        try:
            return Graded(label, read_verdict(out.text))
        except EvaluationError as exc:
            return Graded(label, None, str(exc))

    return list(await asyncio.gather(*(one(label, text) for label, text in answers(result))))


def report(evaluator: str, graded: list[Graded]) -> list[str]:
    lines = [f"--- graded by {evaluator} ---"]
    for g in graded:
        if g.verdict is not None:
            lines.append(f"score {g.verdict.score}/5  {g.label}: {g.verdict.reason}")
        else:
            lines.append(f"no score  {g.label}: {g.error}")
    return lines
