"""From a dispatch to engine parameters, and from a finished generation to the GenerateResult. Pure."""

from __future__ import annotations

import time

from actors.gpu_host.engine import Completion, GenParams
from actors.gpu_host.grammar import grammar_for
from actors.gpu_host.tools import tool_grammar
from schemas.dispatch import Dispatch
from schemas.result import GenerateResult, Provenance, Timings, Usage


def gen_params(dispatch: Dispatch, format_stops: list[str]) -> GenParams:
    """The request's sampling (or the fan-out variant's), plus the stop strings of the chat format."""
    s = dispatch.effective_sampling
    return GenParams(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        seed=s.seed,
        stop=tuple(dict.fromkeys([*s.stop, *format_stops])),
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        grammar=tool_grammar(s) or grammar_for(s.response_format),
    )


def make_result(
    dispatch: Dispatch,
    done: Completion,
    *,
    host: str,
    family: str,
    usage: Usage,
    cost: float,
    load_ms: float,
    taken: float,
    dispatched: float,
) -> GenerateResult:
    """``taken``: when this host took the dispatch; ``dispatched``: when it was stored (epoch seconds)."""
    req, t, s = dispatch.request, dispatch.target, dispatch.effective_sampling
    now = time.time()
    return GenerateResult(
        request_id=req.id,
        text=done.text,
        finish_reason=done.finish_reason,
        model=t.model,
        family=family,
        tier="local",
        target=host,
        usage=usage,
        cost_usd=cost,
        timings=Timings(
            queue_ms=max(0.0, (taken - dispatched) * 1000.0),
            load_ms=load_ms if load_ms >= 1.0 else 0.0,
            first_token_ms=load_ms + done.first_token_s * 1000.0,
            generation_ms=done.generation_s * 1000.0,
            total_ms=max(0.0, (now - (req.created_at or dispatched)) * 1000.0),
        ),
        attempt=dispatch.attempt,
        provenance=Provenance(
            model=t.model,
            family=family,
            tier="local",
            target=host,
            temperature=s.temperature,
            top_p=s.top_p,
            prompt_variant=dispatch.prompt_variant,
        ),
        client_key=req.client_key,
        task=req.task,
        parent_id=dispatch.parent_id,
        created_at=now,
        reservation_id=dispatch.reservation_id,
        reserved_nanos=dispatch.reserved_nanos,
    )
