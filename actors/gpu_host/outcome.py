"""From a dispatch to engine parameters, and from a finished generation to the GenerateResult. Pure."""

from __future__ import annotations

import dataclasses
import time

from actors.gpu_host.engine import Completion, GenParams
from actors.gpu_host.grammar import grammar_for
from actors.gpu_host.tools import split_call, tool_grammar
from bus.outcomes import build_result, provenance_of
from schemas.dispatch import Dispatch
from schemas.request import Sampling
from schemas.result import GenerateResult, Provenance, Response, Timings, Usage


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
        logprobs=s.logprobs or s.top_logprobs > 0,
        top_logprobs=s.top_logprobs,
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
    req = dispatch.request
    now = time.time()
    return build_result(
        dispatch,
        provenance_of(dispatch, family=family, tier="local", target=host),
        text=done.text,
        finish_reason=done.finish_reason,
        logprobs=done.logprobs,
        usage=usage,
        cost_usd=cost,
        timings=Timings(
            queue_ms=max(0.0, (taken - dispatched) * 1000.0),
            load_ms=load_ms if load_ms >= 1.0 else 0.0,
            first_token_ms=load_ms + done.first_token_s * 1000.0,
            generation_ms=done.generation_s * 1000.0,
            total_ms=max(0.0, (now - (req.created_at or dispatched)) * 1000.0),
        ),
        now=now,
    )


def vary_seed(params: GenParams, i: int) -> GenParams:
    """The i-th of n answers: its own seed (the request's seed + i; a random one without a seed)."""
    if i == 0:
        return params
    return dataclasses.replace(params, seed=None if params.seed is None else params.seed + i)


def choices_of(result: GenerateResult, done: list[Completion], s: Sampling) -> list[Response]:
    """n > 1: every answer as a Response (the first is the result's own), tool calls split out."""
    out = []
    for i, c in enumerate(done):
        text, calls = split_call(c.text, s)
        out.append(
            Response(
                request_id=f"{result.request_id}-{i}",
                text=text,
                finish_reason="tool_calls" if calls else c.finish_reason,
                provenance=result.provenance
                or Provenance(model=result.model, family=result.family, tier="local", target=result.target),
                usage=Usage(input_tokens=c.input_tokens, output_tokens=c.output_tokens),
                logprobs=c.logprobs,
                tool_calls=calls,
            )
        )
    return out
