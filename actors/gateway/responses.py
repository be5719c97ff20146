"""OpenAI response bodies (pure): results -> chat / completion answers, stream chunks -> SSE events.

Several answers (``n`` on one model, or a diverse fan-out) are several choices, each with its provenance
in an ``orchestra`` field; tool calls, logprobs (chat: ``logprobs.content``; completions: the legacy token
lists) are shaped as OpenAI shapes them.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from schemas.base import ToolCall
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest
from schemas.result import GenerateResult, Provenance, Response, StreamChunk, TokenLogprob, ToolCallDelta


def _usage(r: GenerateResult) -> dict[str, int]:
    return {
        "prompt_tokens": r.usage.input_tokens,
        "completion_tokens": r.usage.output_tokens,
        "total_tokens": r.usage.total_tokens,
    }


def _extension(r: GenerateResult) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "request_id": r.request_id,
        "model": r.model,
        "family": r.family,
        "tier": r.tier,
        "target": r.target,
        "cached": r.cached,
        "cost_usd": r.cost_usd,
        "attempt": r.attempt,
        "timings": msgspec.to_builtins(r.timings),
    }
    if r.similarity is not None:
        ext["similarity"] = r.similarity
    if r.responses:
        ext["responses"] = msgspec.to_builtins(r.responses)
    if r.consensus is not None:
        ext["consensus"] = msgspec.to_builtins(r.consensus)
    return ext


def tool_calls(calls: list[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    """OpenAI's ``tool_calls`` entries (``index`` added in stream deltas)."""
    return [
        {
            **({"index": i} if indexed else {}),
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for i, c in enumerate(calls)
    ]


def call_delta(d: ToolCallDelta) -> dict[str, Any]:
    """One ``delta.tool_calls[]`` entry as OpenAI streams it: the first of a call carries its id, type and
    name with empty (or partial) arguments; the later ones only argument fragments."""
    fn: dict[str, Any] = {"arguments": d.arguments}
    if d.name is not None:
        fn = {"name": d.name, "arguments": d.arguments}
    if d.id is not None:
        return {"index": d.index, "id": d.id, "type": "function", "function": fn}
    return {"index": d.index, "function": fn}


def _message(r: GenerateResult | Response) -> dict[str, Any]:
    if r.tool_calls:
        return {"role": "assistant", "content": r.text or None, "refusal": None, "tool_calls": tool_calls(r.tool_calls)}
    return {"role": "assistant", "content": r.text, "refusal": None}


def chat_logprobs(lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    return None if lps is None else {"content": msgspec.to_builtins(lps), "refusal": None}


def completion_logprobs(lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """The legacy Completions shape: parallel lists, top alternatives as {token: logprob}."""
    if lps is None:
        return None
    offsets, at = [], 0
    for t in lps:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        "top_logprobs": [{a.token: a.logprob for a in t.top_logprobs} for t in lps],
        "text_offset": offsets,
    }


def _answers(r: GenerateResult) -> list[GenerateResult | Response]:
    """One per choice: n answers of one model, a diverse fan-out's answers, or the result itself."""
    if r.choices:
        return list(r.choices)
    if r.responses and r.consensus is None:
        return list(r.responses)
    return [r]


def _provenance(a: GenerateResult | Response) -> dict[str, Any]:
    """Where one choice was made (the choice's ``orchestra`` field, ``choice.model_extra`` in the SDK):
    model, family, tier, target, temperature, top_p, prompt variant — per answer of a fan-out."""
    if isinstance(a, Response):
        prov, rid, cost = a.provenance, a.request_id, a.cost_usd
    else:
        prov = a.provenance or Provenance(model=a.model, family=a.family, tier=a.tier, target=a.target)
        rid, cost = a.request_id, a.cost_usd
    return {"request_id": rid, **msgspec.to_builtins(prov), "cost_usd": cost}


def chat_response(r: GenerateResult, created: int | None = None) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": _message(a),
            "logprobs": chat_logprobs(a.logprobs),
            "finish_reason": a.finish_reason,
            "orchestra": _provenance(a),
        }
        for i, a in enumerate(_answers(r))
    ]
    return {
        "id": f"chatcmpl-{r.request_id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": r.model,
        "choices": choices,
        "usage": _usage(r),
        "system_fingerprint": None,
        "orchestra": _extension(r),
    }


def completion_response(r: GenerateResult, created: int | None = None) -> dict[str, Any]:
    choices = [
        {
            "text": a.text,
            "index": i,
            "logprobs": completion_logprobs(a.logprobs),
            "finish_reason": a.finish_reason,
            "orchestra": _provenance(a),
        }
        for i, a in enumerate(_answers(r))
    ]
    return {
        "id": f"cmpl-{r.request_id}",
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": r.model,
        "choices": choices,
        "usage": _usage(r),
        "orchestra": _extension(r),
    }


class StreamShaper:
    """SSE events for one streamed answer, chat or completion flavour."""

    def __init__(self, request: GenerateRequest, *, chat: bool, include_usage: bool) -> None:
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request.id}"
        self.chat, self.include_usage = chat, include_usage
        self.created = int(time.time())
        self.model = request.model or "auto"
        self.started = False
        self.calls_streamed = False  # function calls went out as deltas (not again, whole, at the end)

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None, last: bool = False) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.chat:
            body["system_fingerprint"] = None
        if self.include_usage:
            body["usage"] = usage if last else None
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    def _piece(self, text: str, finish: str | None = None, role: bool = False) -> bytes:
        if self.chat:
            delta: dict[str, Any] = (
                {"role": "assistant", "content": text} if role else ({"content": text} if text else {})
            )
            return self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        return self._event([{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}])

    def chunk(self, c: StreamChunk) -> bytes:
        out = b""
        if not self.started:
            self.started = True
            out += self._piece("", role=True) if self.chat else b""
        if c.text:
            out += self._piece(c.text)
        if c.tool_calls and self.chat:
            self.calls_streamed = True
            delta = {"tool_calls": [call_delta(d) for d in c.tool_calls]}
            out += self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        return out

    def finish(self, r: GenerateResult, streamed_text: bool) -> bytes:
        self.model = r.model
        out = b""
        if not self.started:
            self.started = True
            out += self._piece("", role=True) if self.chat else b""
        if not streamed_text and r.text:
            out += self._piece(r.text)
        if r.tool_calls and self.chat and not self.calls_streamed:  # not streamed as deltas: sent whole
            delta = {"tool_calls": tool_calls(r.tool_calls, indexed=True)}
            out += self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        out += self._piece("", finish=r.finish_reason)
        if self.include_usage:
            out += self._event([], usage=_usage(r), last=True)
        return out + b"data: [DONE]\n\n"

    def error(self, info: ErrorInfo) -> bytes:
        _, body = error_body(public_error(info))
        return b"data: " + msgspec.json.encode(body) + b"\n\ndata: [DONE]\n\n"


# GenerateRequest field paths -> the OpenAI parameter a client sent
_PARAM = {
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.max_tokens": "max_tokens",
    "sampling.stop": "stop",
    "sampling.seed": "seed",
    "sampling.presence_penalty": "presence_penalty",
    "sampling.frequency_penalty": "frequency_penalty",
    "sampling.top_logprobs": "top_logprobs",
    "sampling.n": "n",
    "sampling.response_format": "response_format",
}


def param_of(field: str | None) -> str | None:
    if field is None:
        return None
    for prefix, param in _PARAM.items():
        if field.startswith(prefix):
            return param + field[len(prefix) :]
    if field.startswith("requirements."):
        return "orchestra." + field.removeprefix("requirements.")
    return field


# --- errors ----------------------------------------------------------------------------------------
_STATUS: dict[str, tuple[int, str, str | None]] = {
    # code -> (HTTP status, OpenAI error type, OpenAI error code)
    "bad_request": (400, "invalid_request_error", None),
    "unauthorized": (401, "authentication_error", "invalid_api_key"),
    "forbidden": (403, "permission_error", None),
    "not_found": (404, "invalid_request_error", "model_not_found"),
    "rate_limited": (429, "rate_limit_error", "rate_limit_exceeded"),
    "budget_exceeded": (429, "insufficient_quota", "insufficient_quota"),
    "context_too_long": (400, "invalid_request_error", "context_length_exceeded"),
    "content_policy": (400, "invalid_request_error", "content_policy_violation"),
    "timeout": (504, "timeout_error", "timeout"),
    "unavailable": (503, "server_error", "unavailable"),
    "overloaded": (503, "server_error", "overloaded"),
    "oom": (503, "server_error", "oom"),
    "provider_error": (502, "server_error", "upstream_error"),
    "auth_failed": (502, "server_error", "upstream_auth_failed"),
    "cancelled": (499, "server_error", "cancelled"),
    "internal": (500, "server_error", None),
}


# codes whose messages come from inside the orchestra (hosts, providers, routes, attempts): the client reads
# a fixed sentence instead
INTERNAL_CODES: dict[str, str] = {
    "timeout": "no answer before the deadline",
    "unavailable": "no model can answer this request now; retry later",
    "overloaded": "the orchestra is overloaded; retry later",
    "oom": "the model ran out of memory; retry later or ask for fewer tokens",
    "provider_error": "an upstream model provider failed; retry later",
    "auth_failed": "an upstream model provider refused the orchestra's credentials",
    "internal": "internal error",
}


GATEWAY_OWN = ("the answer was cut",)  # messages the gateway writes itself (no topology in them)


def public_error(info: ErrorInfo) -> ErrorInfo:
    """What a client may read of an error: internal codes get a fixed message (the original goes to the
    log); the others keep theirs (they describe the client's own request, key or quota)."""
    fixed = INTERNAL_CODES.get(info.code)
    if fixed is None or info.message == fixed or info.message.startswith(GATEWAY_OWN):
        return info
    return ErrorInfo(code=info.code, message=fixed, retryable=info.retryable, retry_after_s=info.retry_after_s)


def error_body(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    status, etype, code = _STATUS.get(info.code, (500, "server_error", None))
    return status, {"error": {"message": info.message, "type": etype, "param": param_of(info.field), "code": code}}
