"""The OpenAI wire format, pure: request bodies -> GenerateRequest, outcomes -> response bodies,
stream chunks -> SSE events, typed errors -> HTTP status + OpenAI error body.

Orchestra extensions ride in an optional ``orchestra`` object in the request body (the SDK's
``extra_body``) and in an ``orchestra`` object in responses; standard clients ignore both.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from actors.gateway.requests import (
    CHAT,
    COMPLETION,
    ChatRequest,
    CompletionRequest,
    OAMessage,
    OrchestraExt,
    refuse_unsupported,
)
from schemas.base import ToolCall
from schemas.errors import ErrorInfo, SchemaError
from schemas.request import (
    VIRTUAL_MODELS,
    CachePolicy,
    ChatMessage,
    GenerateRequest,
    Requirements,
    ResponseFormat,
    Sampling,
    Tool,
    make_request,
)
from schemas.result import GenerateError, GenerateResult, Outcome, StreamChunk

__all__ = [  # the request bodies are defined in actors.gateway.requests and used from here too
    "CHAT",
    "COMPLETION",
    "ChatRequest",
    "CompletionRequest",
    "StreamShaper",
    "chat_response",
    "completion_response",
    "error_body",
    "public_error",
    "to_request",
]

DEFAULT_CHAT_MAX_TOKENS = 256
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


# GenerateRequest field paths -> the OpenAI parameter a client sent
_PARAM = {
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.max_tokens": "max_tokens",
    "sampling.stop": "stop",
    "sampling.seed": "seed",
    "sampling.presence_penalty": "presence_penalty",
    "sampling.frequency_penalty": "frequency_penalty",
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


def _text(msg: OAMessage, index: int) -> str:
    if msg.content is None:
        return msg.refusal or ""  # an assistant turn that refused: its refusal is what it said
    if isinstance(msg.content, str):
        return msg.content
    parts = []
    for j, part in enumerate(msg.content):
        if part.type != "text" or part.text is None:
            raise SchemaError(
                f"only text content parts are supported, got {part.type!r}", f"messages[{index}].content[{j}]"
            )
        parts.append(part.text)
    return "".join(parts)


def _calls(m: OAMessage, index: int) -> list[ToolCall]:
    out = []
    for j, call in enumerate(m.tool_calls or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise SchemaError(
                "expected {id, type: function, function: {name, arguments}}", f"messages[{index}].tool_calls[{j}]"
            )
        out.append(ToolCall(id=call["id"], name=fn["name"], arguments=str(fn.get("arguments") or "{}")))
    return out


def _messages(body: ChatRequest) -> list[ChatMessage]:
    out = []
    for i, m in enumerate(body.messages):
        role: Literal["system", "user", "assistant", "tool"] = "system" if m.role in ("system", "developer") else m.role  # type: ignore[assignment]
        if role == "tool" and not m.tool_call_id:
            raise SchemaError("a tool message needs the tool_call_id it answers", f"messages[{i}].tool_call_id")
        out.append(ChatMessage(role=role, content=_text(m, i), tool_calls=_calls(m, i), tool_call_id=m.tool_call_id))
    if not out:
        raise SchemaError("must not be empty", "messages")
    return out


def to_request(
    body: ChatRequest | CompletionRequest, *, client_key: str | None, default_timeout: float
) -> GenerateRequest:
    """Build and validate the GenerateRequest; SchemaError names the OpenAI parameter at fault."""
    refuse_unsupported(body)
    ext = body.orchestra or OrchestraExt()
    mode = body.model if body.model in ("diverse", "ensemble") else "single"
    n = 1 if body.n is None else body.n
    stream = bool(body.stream)
    if n != 1 and mode == "single":
        raise SchemaError("only n=1 is supported; use model `diverse` or `ensemble` for several answers", "n")
    if mode != "single" and stream:
        raise SchemaError(f"streaming is not available for the `{mode}` model", "stream")
    if isinstance(body, ChatRequest):
        messages, prompt = _messages(body), None
        given = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = DEFAULT_CHAT_MAX_TOKENS if given is None else given
    else:
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise SchemaError("exactly one prompt per request is supported", "prompt")
            prompt = body.prompt[0]
        else:
            prompt = body.prompt
        messages = None
        max_tokens = DEFAULT_COMPLETION_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    sampling = Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        response_format=response_format(body.response_format) if isinstance(body, ChatRequest) else None,
        **(_tools(body) if isinstance(body, ChatRequest) else {}),
    )
    try:
        return make_request(
            messages=messages,
            prompt=prompt,
            model=None if body.model == "auto" else body.model,
            mode=mode,
            stream=stream,
            sampling=sampling,
            requirements=Requirements(
                capability=ext.capability,
                strategy=ext.strategy,
                tiers=ext.tiers,
                family=ext.family,
                route=ext.route,
                fanout=ext.fanout if ext.fanout is not None else (n if mode != "single" and n > 1 else None),
                max_cost_usd=ext.max_cost_usd,
                min_quality=ext.min_quality,
            ),
            cache=CachePolicy(no_cache=ext.no_cache, no_store=ext.no_store, allow_sampled=ext.allow_sampled),
            priority=ext.priority,
            client_key=client_key,
            task=ext.task,
            timeout_s=ext.timeout_s or default_timeout,
            tags=_tags(body),
        )
    except SchemaError as exc:
        raise SchemaError(exc.reason, param_of(exc.field)) from exc


def response_format(given: dict[str, Any] | None) -> ResponseFormat | None:
    """OpenAI's ``response_format`` -> ResponseFormat (None for plain text); the schema travels as JSON text
    with sorted keys, so equal schemas share cache keys."""
    kind = (given or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    if kind != "json_schema":
        raise SchemaError(f"unknown type {kind!r}: text, json_object or json_schema", "response_format.type")
    spec = (given or {}).get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise SchemaError("must be an object with a `schema` object", "response_format.json_schema")
    name = spec.get("name")
    return ResponseFormat(
        type="json_schema",
        name=str(name)[:64] if name else None,
        json_schema=msgspec.json.encode(spec.get("schema") or {"type": "object"}, order="sorted").decode(),
        strict=bool(spec.get("strict")),
    )


def _tools(body: ChatRequest) -> dict[str, Any]:
    """tools / tool_choice / parallel_tool_calls -> Sampling fields."""
    tools = []
    for i, t in enumerate(body.tools or []):
        fn = t.get("function") if isinstance(t, dict) and t.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise SchemaError("expected {type: function, function: {name, description?, parameters?}}", f"tools[{i}]")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        tools.append(
            Tool(
                name=fn["name"],
                description=str(fn.get("description") or ""),
                parameters=msgspec.json.encode(params, order="sorted").decode(),
            )
        )
    choice = body.tool_choice if body.tool_choice is not None else "auto"
    if isinstance(choice, dict):
        fn = choice.get("function")
        choice = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(choice, str) or (
        choice not in ("auto", "none", "required") and choice not in {t.name for t in tools}
    ):
        raise SchemaError(
            "auto, none, required, or {type: function, function: {name}} of a declared tool", "tool_choice"
        )
    if choice == "required" and not tools:
        raise SchemaError("required needs tools", "tool_choice")
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": body.parallel_tool_calls}


MAX_TAGS = 16  # OpenAI's own limit on metadata pairs


def _tags(body: ChatRequest | CompletionRequest) -> dict[str, str]:
    """``user``, ``safety_identifier``, ``prompt_cache_key`` and ``metadata``: recorded on the request (audits,
    per-user reports), as OpenAI records them; they do not change the answer."""
    tags = {f"metadata.{k}": v for k, v in ((body.metadata or {}) if isinstance(body, ChatRequest) else {}).items()}
    if len(tags) > MAX_TAGS or any(len(k) > 72 or len(v) > 512 for k, v in tags.items()):
        raise SchemaError(f"at most {MAX_TAGS} pairs, keys up to 64 and values up to 512 characters", "metadata")
    if body.user:
        tags["user"] = body.user[:256]
    if isinstance(body, ChatRequest):
        if body.safety_identifier:
            tags["safety_identifier"] = body.safety_identifier[:256]
        if body.prompt_cache_key:
            tags["prompt_cache_key"] = body.prompt_cache_key[:256]
    return tags


# --- responses -------------------------------------------------------------------------------------
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


def _message(r: GenerateResult) -> dict[str, Any]:
    if r.tool_calls:
        return {"role": "assistant", "content": r.text or None, "refusal": None, "tool_calls": tool_calls(r.tool_calls)}
    return {"role": "assistant", "content": r.text, "refusal": None}


def chat_response(r: GenerateResult, created: int | None = None) -> dict[str, Any]:
    answers = r.responses if r.responses and r.consensus is None else []
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": a.text, "refusal": None},
            "logprobs": None,
            "finish_reason": a.finish_reason,
        }
        for i, a in enumerate(answers)
    ] or [
        {
            "index": 0,
            "message": _message(r),
            "logprobs": None,
            "finish_reason": r.finish_reason,
        }
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
    answers = [(a.text, a.finish_reason) for a in r.responses] if r.responses and r.consensus is None else []
    choices = [
        {"text": text, "index": i, "logprobs": None, "finish_reason": fr}
        for i, (text, fr) in enumerate(answers or [(r.text, r.finish_reason)])
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
        return out

    def finish(self, r: GenerateResult, streamed_text: bool) -> bytes:
        self.model = r.model
        out = b""
        if not self.started:
            self.started = True
            out += self._piece("", role=True) if self.chat else b""
        if not streamed_text and r.text:
            out += self._piece(r.text)
        if r.tool_calls and self.chat:  # a call arrives whole: one delta with every call and its arguments
            delta = {"tool_calls": tool_calls(r.tool_calls, indexed=True)}
            out += self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        out += self._piece("", finish=r.finish_reason)
        if self.include_usage:
            out += self._event([], usage=_usage(r), last=True)
        return out + b"data: [DONE]\n\n"

    def error(self, info: ErrorInfo) -> bytes:
        _, body = error_body(public_error(info))
        return b"data: " + msgspec.json.encode(body) + b"\n\ndata: [DONE]\n\n"


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


def outcome_error(outcome: Outcome) -> ErrorInfo | None:
    return outcome.error if isinstance(outcome, GenerateError) else None


def models_list(names: list[str], owners: dict[str, str]) -> dict[str, Any]:
    data = [{"id": n, "object": "model", "created": 0, "owned_by": owners.get(n, "orchestra")} for n in names]
    return {"object": "list", "data": data}


def is_virtual(model: str) -> bool:
    return model in VIRTUAL_MODELS
