"""The OpenAI wire format, pure: request bodies -> GenerateRequest, outcomes -> response bodies,
stream chunks -> SSE events, typed errors -> HTTP status + OpenAI error body.

Orchestra extensions ride in an optional ``orchestra`` object in the request body (the SDK's
``extra_body``) and in an ``orchestra`` object in responses; standard clients ignore both.
"""

from __future__ import annotations

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
from actors.gateway.responses import (
    GATEWAY_OWN,
    INTERNAL_CODES,
    StreamShaper,
    chat_response,
    completion_response,
    error_body,
    param_of,
    public_error,
    tool_calls,
)
from schemas.base import ToolCall
from schemas.errors import SchemaError
from schemas.request import (
    MAX_SCHEMA_CHARS,
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

__all__ = [  # request bodies (actors.gateway.requests) and responses (actors.gateway.responses) used from here
    "CHAT",
    "COMPLETION",
    "GATEWAY_OWN",
    "INTERNAL_CODES",
    "tool_calls",
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
    mode, n, stream = _mode(body)
    messages, prompt, max_tokens = _input(body)
    try:
        return make_request(
            messages=messages,
            prompt=prompt,
            model=None if body.model == "auto" else body.model,
            mode=mode,
            stream=stream,
            sampling=_sampling(body, mode=mode, n=n, stream=stream, max_tokens=max_tokens),
            requirements=_requirements(ext, mode=mode, n=n),
            cache=CachePolicy(no_cache=ext.no_cache, no_store=ext.no_store, allow_sampled=ext.allow_sampled),
            priority=ext.priority,
            client_key=client_key,
            task=ext.task,
            timeout_s=ext.timeout_s or default_timeout,
            tags=_tags(body),
        )
    except SchemaError as exc:
        raise SchemaError(exc.reason, param_of(exc.field)) from exc


def _mode(body: ChatRequest | CompletionRequest) -> tuple[str, int, bool]:
    """(mode, n, stream): the virtual models ``diverse`` and ``ensemble`` fan out, and are not streamed."""
    mode = body.model if body.model in ("diverse", "ensemble") else "single"
    n = 1 if body.n is None else body.n
    stream = bool(body.stream)
    if n != 1 and mode == "single" and stream:
        raise SchemaError("several answers (n > 1) are not streamed", "n")
    if mode != "single" and stream:
        raise SchemaError(f"streaming is not available for the `{mode}` model", "stream")
    return mode, n, stream


def _input(body: ChatRequest | CompletionRequest) -> tuple[list[ChatMessage] | None, str | None, int]:
    """(messages, prompt, max_tokens): a chat's messages, or a completion's one prompt."""
    if isinstance(body, ChatRequest):
        given = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return _messages(body), None, DEFAULT_CHAT_MAX_TOKENS if given is None else given
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise SchemaError("exactly one prompt per request is supported", "prompt")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    return None, prompt, DEFAULT_COMPLETION_MAX_TOKENS if body.max_tokens is None else body.max_tokens


def _sampling(body: ChatRequest | CompletionRequest, *, mode: str, n: int, stream: bool, max_tokens: int) -> Sampling:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if isinstance(body, ChatRequest):
        top = body.top_logprobs or 0
        want_logprobs = bool(body.logprobs) or top > 0
    else:
        top = body.logprobs or 0
        want_logprobs = body.logprobs is not None
    if want_logprobs and stream:
        raise SchemaError("log probabilities are not streamed: ask without stream", "logprobs")
    return Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        response_format=response_format(body.response_format) if isinstance(body, ChatRequest) else None,
        logprobs=want_logprobs,
        top_logprobs=top,
        n=n if mode == "single" else 1,
        **(_tools(body) if isinstance(body, ChatRequest) else {}),
    )


def _requirements(ext: OrchestraExt, *, mode: str, n: int) -> Requirements:
    return Requirements(
        capability=ext.capability,
        strategy=ext.strategy,
        tiers=ext.tiers,
        family=ext.family,
        route=ext.route,
        fanout=ext.fanout if ext.fanout is not None else (n if mode != "single" and n > 1 else None),
        max_cost_usd=ext.max_cost_usd,
        min_quality=ext.min_quality,
    )


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
    if sum(len(t.parameters) + len(t.description) for t in tools) > MAX_SCHEMA_CHARS:
        # a grammar is built from them on the worker: their size is bounded like a response_format schema
        raise SchemaError(f"the tools' schemas and descriptions exceed {MAX_SCHEMA_CHARS} characters", "tools")
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


def models_list(names: list[str], owners: dict[str, str]) -> dict[str, Any]:
    data = [{"id": n, "object": "model", "created": 0, "owned_by": owners.get(n, "orchestra")} for n in names]
    return {"object": "list", "data": data}


def is_virtual(model: str) -> bool:
    return model in VIRTUAL_MODELS
