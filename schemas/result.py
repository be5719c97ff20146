"""Outcomes: the one final answer per request (``orch.result.<id>``), failed attempts, stream chunks."""

from __future__ import annotations

from typing import Literal

from schemas.base import Message, RequestId, Tagged, Tier, ToolCall
from schemas.errors import ErrorInfo

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


class Usage(Message, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Timings(Message, frozen=True, kw_only=True):
    """Milliseconds. ``queue_ms``: published -> a worker took it; ``total_ms``: published -> result."""

    queue_ms: float = 0.0
    load_ms: float = 0.0  # model load on the way (cold start), 0 when it was loaded
    first_token_ms: float = 0.0
    generation_ms: float = 0.0
    total_ms: float = 0.0


class TopLogprob(Message, frozen=True, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] = []


class TokenLogprob(Message, frozen=True, kw_only=True):
    """One generated token with its log probability under the model (OpenAI's ``logprobs.content[]``)."""

    token: str
    logprob: float
    bytes: list[int] = []
    top_logprobs: list[TopLogprob] = []


class Provenance(Message, frozen=True, kw_only=True):
    """Where and how an answer was made: the record the diversity metrics and audits use."""

    model: str
    family: str
    tier: Tier
    target: str  # gpu_host id, or cloud provider name, or "cache"
    temperature: float | None = None
    top_p: float | None = None
    prompt_variant: str | None = None  # diverse mode: direct, plan-first, test-first, ...


class Response(Message, frozen=True, kw_only=True):
    """One answer inside a fan-out (diverse / ensemble) result."""

    request_id: RequestId
    text: str
    finish_reason: FinishReason = "stop"
    provenance: Provenance
    usage: Usage = Usage()
    cost_usd: float = 0.0
    confidence: float | None = None
    # where ``confidence`` comes from: "logprobs" (mean token probability), "measured" (the model's measured
    # accuracy), "configured_rank" (no measurement exists: models.yaml quality / 10), "none"
    confidence_source: str | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] = []


class Agreement(Message, frozen=True, kw_only=True):
    """How two answers of an ensemble compare (indexes into ``responses``)."""

    a: int
    b: int
    agree: bool
    score: float  # 0..1: similarity, or 1.0 / 0.0 for a check that decided
    method: str  # "contradiction", "check", "embedding", "lexical", "ast", "behaviour", "code-embedding", ...
    reason: str = ""  # why, in words ("negation: 'paris' is denied by one answer and asserted by the other")


class Consensus(Message, frozen=True, kw_only=True):
    consistency: float  # 0..1, agreement between the answers
    threshold: float
    escalated: bool  # below threshold: an escalation event went out for human review
    votes: dict[str, float] = {}  # answer cluster label -> weighted vote
    pairs: list[Agreement] = []  # every pair of answers, judged


class GenerateResult(Tagged, frozen=True, kw_only=True, tag="result"):
    request_id: RequestId
    text: str
    finish_reason: FinishReason = "stop"
    model: str
    family: str
    tier: Tier
    target: str
    usage: Usage = Usage()
    cost_usd: float = 0.0
    timings: Timings = Timings()
    cached: bool = False
    similarity: float | None = None  # for semantic cache hits
    attempt: int = 0
    provenance: Provenance | None = None
    responses: list[Response] = []  # diverse / ensemble: every answer with its provenance
    consensus: Consensus | None = None
    client_key: str | None = None  # copied from the request: budgets and reports by key
    task: str | None = None  # copied from the request: diversity per task
    parent_id: str | None = None  # set on a fan-out child's result: the diverse/ensemble request
    created_at: float = 0.0
    reservation_id: str | None = None  # copied from the Dispatch: the budget hold this attempt settles
    reserved_nanos: int = 0  # copied from the Dispatch: the worst case held for it
    tool_calls: list[ToolCall] = []  # the model called functions (finish_reason "tool_calls")
    logprobs: list[TokenLogprob] | None = None  # asked for with sampling.logprobs
    choices: list[Response] = []  # n > 1 on one model: every answer, the first is the result's own
    cache_store: bool = True  # copied from the Dispatch: False when the cache remembered no miss to store


class GenerateError(Tagged, frozen=True, kw_only=True, tag="error"):
    request_id: RequestId
    error: ErrorInfo
    attempts: int = 0
    created_at: float = 0.0


Outcome = GenerateResult | GenerateError


class AttemptFailed(Message, frozen=True, kw_only=True):
    """A worker's failure, for the router (``orch.result.<id>.failed``): it falls back or gives up."""

    request_id: RequestId
    attempt: int
    target: str
    model: str
    tier: Tier
    error: ErrorInfo
    streamed: bool = False  # chunks already reached the client: no silent fallback possible
    usage: Usage = Usage()  # tokens spent before the failure (they may cost money)
    cost_usd: float = 0.0
    client_key: str | None = None
    parent_id: str | None = None
    created_at: float = 0.0
    reservation_id: str | None = None  # copied from the Dispatch, as on GenerateResult
    reserved_nanos: int = 0


class ToolCallDelta(Message, frozen=True, kw_only=True):
    """A piece of a streamed function call (OpenAI's ``delta.tool_calls[]``): the first piece of call
    ``index`` carries its id and name, the later ones fragments of its JSON arguments."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class StreamChunk(Message, frozen=True, kw_only=True):
    """A piece of a streamed answer on core NATS ``orch.stream.<id>`` (not stored)."""

    request_id: RequestId
    attempt: int = 0
    index: int
    text: str
    done: bool = False
    finish_reason: FinishReason | None = None
    tool_calls: list[ToolCallDelta] = []  # pieces of function calls (their text is in these, not ``text``)
