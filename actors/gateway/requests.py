"""Incoming OpenAI request bodies, every field declared: nothing a client sends is silently dropped.

Each field of the chat and completions requests is either honoured (mapped onto the GenerateRequest by
:func:`actors.gateway.openai_api.to_request`) or refused with a 400 naming it (:func:`refuse_unsupported`);
a field the API does not define is a 400 too (``forbid_unknown_fields``). docs/openai-compat.md lists every
field and what the orchestra does with it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schemas.base import Capability, Priority, Strategy, Tier
from schemas.codec import Codec
from schemas.errors import SchemaError


class _In(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Incoming bodies: a field the OpenAI API does not define is refused (a typo must not pass silently)."""


class ContentPart(_In, kw_only=True):
    type: str
    text: str | None = None
    image_url: Any = None
    input_audio: Any = None
    file: Any = None
    refusal: str | None = None


class OAMessage(_In, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any = None
    refusal: str | None = None
    audio: Any = None


class StreamOptions(_In, kw_only=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class OrchestraExt(_In, kw_only=True):
    capability: Capability | None = None
    strategy: Strategy = "auto"
    tiers: list[Tier] = []
    family: str | None = None
    route: str | None = None
    fanout: int | None = None
    max_cost_usd: float | None = None
    min_quality: int | None = None
    no_cache: bool = False
    no_store: bool = False
    allow_sampled: bool = False
    priority: Priority = "normal"
    task: str | None = None
    timeout_s: Annotated[float, Meta(gt=0, le=86_400)] | None = None


class _Common(_In, kw_only=True):
    model: str
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    orchestra: OrchestraExt | None = None


class ChatRequest(_Common, kw_only=True):
    messages: list[OAMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: Any = None


class CompletionRequest(_Common, kw_only=True):
    prompt: str | list[str]
    max_tokens: int | None = None
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


CHAT: Codec[ChatRequest] = Codec(ChatRequest)
COMPLETION: Codec[CompletionRequest] = Codec(CompletionRequest)


def decode(raw: bytes, *, chat: bool) -> ChatRequest | CompletionRequest:
    """The body, or a SchemaError whose field names the parameter (also for an unknown one)."""
    try:
        return (CHAT if chat else COMPLETION).decode(raw)
    except SchemaError as exc:
        unknown = "Object contains unknown field `"
        if exc.reason.startswith(unknown):
            name = exc.reason[len(unknown) :].rstrip("`")
            field = f"{exc.field}.{name}" if exc.field else name
            raise SchemaError("is not a parameter of this endpoint", field) from exc
        raise


def _absent(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {}


# field -> why it is refused when given (a value other than absent / its neutral default)
_REFUSED_CHAT: dict[str, str] = {
    "logit_bias": "is not supported (token ids differ between the orchestra's models)",
    "functions": "is deprecated and not supported: use tools",
    "function_call": "is deprecated and not supported: use tool_choice",
    "store": "is not supported: the orchestra keeps no stored completions",
    "audio": "is not supported: the orchestra's models answer text",
    "prediction": "is not supported (no predicted outputs)",
    "reasoning_effort": "is not supported (no reasoning models)",
    "verbosity": "is not supported",
    "web_search_options": "is not supported (no web search)",
}
_REFUSED_COMPLETION: dict[str, str] = {
    "logit_bias": _REFUSED_CHAT["logit_bias"],
    "echo": "is not supported",
    "suffix": "is not supported (no fill-in-the-middle)",
}
_REFUSED_MESSAGE: dict[str, str] = {
    "name": "is not supported (participant names are not passed to the models)",
    "function_call": "is deprecated and not supported: use tool_calls",
    "audio": "is not supported: the orchestra's models answer text",
}


def refuse_unsupported(body: ChatRequest | CompletionRequest) -> None:
    """A SchemaError naming the first field the orchestra cannot honour (see docs/openai-compat.md)."""
    table = _REFUSED_CHAT if isinstance(body, ChatRequest) else _REFUSED_COMPLETION
    for name, why in table.items():
        if not _absent(getattr(body, name)):
            raise SchemaError(why, name)
    opts = body.stream_options
    if opts is not None and opts.include_obfuscation:
        raise SchemaError("is not supported (no obfuscation padding)", "stream_options.include_obfuscation")
    if isinstance(body, CompletionRequest):
        if body.best_of not in (None, 1):
            raise SchemaError("only best_of=1 is supported", "best_of")
        return
    if body.modalities not in (None, ["text"]):
        raise SchemaError("only ['text'] is supported", "modalities")
    if body.service_tier not in (None, "auto", "default"):
        raise SchemaError("only 'auto' and 'default' are supported", "service_tier")
    for i, m in enumerate(body.messages):
        if m.role == "function":
            raise SchemaError("role 'function' is deprecated and not supported: use 'tool'", f"messages[{i}].role")
        for name, why in _REFUSED_MESSAGE.items():
            if not _absent(getattr(m, name)):
                raise SchemaError(why, f"messages[{i}].{name}")
