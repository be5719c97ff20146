"""GenerateRequest: what a client (gateway, CLI, a training job) asks the orchestra to do."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schemas.base import (
    Capability,
    Message,
    Name,
    Priority,
    RequestId,
    RouteMode,
    Strategy,
    Tier,
    ToolCall,
    new_id,
    now,
)
from schemas.errors import SchemaError

MAX_PROMPT_CHARS = 1_000_000  # the sum over all messages; the embedded NATS allows 4 MiB payloads
MAX_MESSAGES = 1024
DEFAULT_TIMEOUT_S = 120.0
VIRTUAL_MODELS = ("auto", "diverse", "ensemble")


class ChatMessage(Message, frozen=True, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)]
    tool_calls: Annotated[list[ToolCall], Meta(max_length=64)] = []  # an assistant turn that called functions
    tool_call_id: str | None = None  # a tool turn: the call it answers


MAX_TOOLS = 128


class Tool(Message, frozen=True, kw_only=True):
    """A function a model may call (OpenAI's ``tools[].function``); ``parameters`` is a JSON Schema (text)."""

    name: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, Meta(max_length=4096)] = ""
    parameters: Annotated[str, Meta(max_length=65_536)] = '{"type":"object","properties":{}}'


MAX_SCHEMA_CHARS = 65_536


class ResponseFormat(Message, frozen=True, kw_only=True):
    """OpenAI's ``response_format``: JSON mode (``json_object``) or a JSON Schema the answer must follow.
    Local models are constrained by a llama.cpp grammar built from it; cloud providers receive it."""

    type: Literal["json_object", "json_schema"]
    name: Annotated[str, Meta(max_length=64)] | None = None
    json_schema: Annotated[str, Meta(max_length=MAX_SCHEMA_CHARS)] | None = None  # the schema, as JSON text
    strict: bool = False


class Sampling(Message, frozen=True, kw_only=True):
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Meta(ge=0, le=1000)] = 40
    max_tokens: Annotated[int, Meta(ge=1, le=131_072)] = 256
    stop: Annotated[list[Annotated[str, Meta(min_length=1, max_length=256)]], Meta(max_length=16)] = []
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    response_format: ResponseFormat | None = None  # part of sampling: it is in every cache key
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] = []  # functions the model may call
    tool_choice: str = "auto"  # auto | none | required | the name of one tool
    parallel_tool_calls: bool | None = None  # passed to providers that take it
    logprobs: bool = False  # the answer carries each token's log probability
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] = 0  # and this many most likely alternatives per token
    n: Annotated[int, Meta(ge=1, le=16)] = 1  # answers from the one model (local llama.cpp models)

    @property
    def calls_tools(self) -> bool:
        """Whether the model may answer with a function call."""
        return bool(self.tools) and self.tool_choice != "none"


class Requirements(Message, frozen=True, kw_only=True):
    """What the router must honour when ``model`` is virtual (or absent)."""

    capability: Capability | None = None  # None: classified from the prompt
    strategy: Strategy = "auto"
    tiers: list[Tier] = []  # allowed tiers; empty: the phase policy decides
    family: Name | None = None
    route: Name | None = None  # a declarative route from routes.yaml
    max_cost_usd: Annotated[float, Meta(ge=0.0)] | None = None
    min_quality: Annotated[int, Meta(ge=0, le=10)] | None = None
    min_context: Annotated[int, Meta(ge=0)] | None = None
    fanout: Annotated[int, Meta(ge=1, le=64)] | None = None  # diverse/ensemble: how many answers


class CachePolicy(Message, frozen=True, kw_only=True):
    no_cache: bool = False  # do not answer from the cache
    no_store: bool = False  # do not store the answer
    allow_sampled: bool = False  # opt in to caching at temperature > 0


class GenerateRequest(Message, frozen=True, kw_only=True):
    id: RequestId
    messages: Annotated[list[ChatMessage], Meta(max_length=MAX_MESSAGES)] | None = None
    prompt: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)] | None = None
    model: Name | None = None  # a library model, a virtual model (auto/diverse/ensemble) or None (= auto)
    mode: RouteMode = "single"
    requirements: Requirements = Requirements()
    sampling: Sampling = Sampling()
    stream: bool = False
    cache: CachePolicy = CachePolicy()
    priority: Priority = "normal"
    client_key: Name | None = None  # the id of the client's API key, never the key itself
    # Who asked, as the request's subject says (orch.request.<priority>.<origin>.<id>): "gw", "op" or a
    # client's name. The router sets it from the subject, which NATS permissions authenticate; a value in
    # the body is never trusted. Results and chunks go to orch.result.<origin>.<id> / orch.stream.<origin>.<id>.
    origin: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")] = "op"
    task: Name | None = None  # groups requests of one task for diversity metrics
    tags: dict[str, str] = {}
    created_at: float = 0.0
    deadline: float = 0.0  # absolute, epoch seconds; 0 = created_at + DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of `messages` and `prompt` must be given - at `$.messages`")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("must not be empty - at `$.messages`")
            total = sum(len(m.content) for m in self.messages)
        else:
            total = len(self.prompt or "")
        if total > MAX_PROMPT_CHARS:
            where = "messages" if self.messages is not None else "prompt"
            raise ValueError(f"prompt of {total} characters exceeds {MAX_PROMPT_CHARS} - at `$.{where}`")
        if self.mode != "single" and self.stream:
            raise ValueError(f"streaming is not available in {self.mode} mode - at `$.stream`")

    @property
    def effective_deadline(self) -> float:
        if self.deadline:
            return self.deadline
        return (self.created_at or now()) + DEFAULT_TIMEOUT_S

    def prompt_text(self) -> str:
        """The request's text, for classification, token estimates and cache keys."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages or ())


def make_request(
    *,
    messages: list[ChatMessage] | None = None,
    prompt: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    id: str | None = None,
    **fields: object,
) -> GenerateRequest:
    """Build a request with a fresh id, created_at and deadline (the usual way for clients).
    It is validated like one arriving from the bus (constraints are checked on decode only):
    SchemaError names the wrong field."""
    t = now()
    try:
        request = GenerateRequest(
            id=id or new_id(),
            messages=messages,
            prompt=prompt,
            created_at=t,
            deadline=t + timeout_s,
            **fields,  # type: ignore[arg-type]
        )
    except ValueError as exc:  # __post_init__'s checks (too long, both or neither of messages/prompt)
        raise SchemaError.from_msgspec(exc) from exc
    try:
        return msgspec.json.decode(msgspec.json.encode(request), type=GenerateRequest)
    except msgspec.ValidationError as exc:
        raise SchemaError.from_msgspec(exc) from exc
