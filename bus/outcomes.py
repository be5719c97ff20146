"""Publishing outcomes the way the protocol requires (docs/protocol.md), for workers and the router.

result = build_result(dispatch, provenance_of(dispatch, ...), text=..., ...)  # the one GenerateResult builder
await stored_outcome(js, request_id, origin)            # the outcome stored for a request, or None
await has_outcome(js, request_id, origin)               # whether one is stored (no decoding)
await stored_failure(js, request_id, origin)            # the last AttemptFailed stored, or None
await publish_outcome(actor, result_or_error, origin)  # orch.result.<origin>.<id>, Msg-Id <id>: stored once
await publish_failure(actor, dispatch, error, ...)      # orch.result.<origin>.<id>.failed for the router
chunks = ChunkSender(actor, request_id, attempt, origin)  # orch.stream.<origin>.<id>, core NATS
follow = StreamFollower()       # a reader's side: which chunks belong to the one answer it shows

``origin`` is the request's (``request.origin``): the one who asked reads its answers there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import subjects
from schemas.base import Tier, ToolCall
from schemas.codec import ATTEMPT_FAILED, OUTCOME
from schemas.dispatch import Dispatch
from schemas.errors import ErrorInfo, SchemaError
from schemas.result import (
    AttemptFailed,
    FinishReason,
    GenerateError,
    GenerateResult,
    Outcome,
    Provenance,
    Response,
    StreamChunk,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from bus.actor import Actor


# --- the one result builder (pure): every tier's GenerateResult copies the dispatch the same way ----------
def provenance_of(dispatch: Dispatch, *, family: str, tier: Tier, target: str) -> Provenance:
    """Who answered, with the sampling and prompt variant the dispatch asked of it."""
    s = dispatch.effective_sampling
    return Provenance(
        model=dispatch.target.model,
        family=family,
        tier=tier,
        target=target,
        temperature=s.temperature,
        top_p=s.top_p,
        prompt_variant=dispatch.prompt_variant,
    )


def build_result(
    dispatch: Dispatch,
    provenance: Provenance,
    *,
    text: str,
    finish_reason: FinishReason,
    usage: Usage,
    cost_usd: float,
    timings: Timings,
    now: float,
    tool_calls: list[ToolCall] | None = None,
    logprobs: list[TokenLogprob] | None = None,
    choices: list[Response] | None = None,
) -> GenerateResult:
    """A worker's answer to ``dispatch``: the request's and the dispatch's fields (attempt, client key,
    task, parent, budget hold) are copied here, once for every tier."""
    req = dispatch.request
    return GenerateResult(
        request_id=req.id,
        text=text,
        finish_reason=finish_reason,
        tool_calls=tool_calls or [],
        logprobs=logprobs,
        model=provenance.model,
        family=provenance.family,
        tier=provenance.tier,
        target=provenance.target,
        usage=usage,
        cost_usd=cost_usd,
        timings=timings,
        attempt=dispatch.attempt,
        provenance=provenance,
        client_key=req.client_key,
        task=req.task,
        parent_id=dispatch.parent_id,
        created_at=now,
        reservation_id=dispatch.reservation_id,
        reserved_nanos=dispatch.reserved_nanos,
        choices=choices or [],
        cache_store=dispatch.cache_store,
    )


# --- what is stored for a request (direct gets on RESULTS) --------------------------------------------
async def stored_outcome(js: JetStreamContext, request_id: str, origin: str) -> Outcome | None:
    """The final outcome stored for a request; None when there is none (or it does not decode)."""
    try:
        msg = await js.get_last_msg(subjects.RESULTS_STREAM, subjects.result(request_id, origin))
    except NotFoundError:
        return None
    try:
        return OUTCOME.decode(msg.data or b"")
    except SchemaError:
        return None


async def has_outcome(js: JetStreamContext, request_id: str, origin: str) -> bool:
    """Whether a final outcome is stored for a request (whatever it holds)."""
    try:
        await js.get_last_msg(subjects.RESULTS_STREAM, subjects.result(request_id, origin))
    except NotFoundError:
        return False
    return True


async def stored_failure(js: JetStreamContext, request_id: str, origin: str) -> AttemptFailed | None:
    """The last failed attempt stored for a request, or None (raises SchemaError if it does not decode)."""
    try:
        msg = await js.get_last_msg(subjects.RESULTS_STREAM, subjects.attempt_failed(request_id, origin))
    except NotFoundError:
        return None
    return ATTEMPT_FAILED.decode(msg.data or b"")


async def publish_outcome(actor: Actor, outcome: Outcome, origin: str) -> bool:
    """Store the final outcome of a request. False when another outcome was stored first."""
    ack = await actor.publish(subjects.result(outcome.request_id, origin), outcome, msg_id=outcome.request_id)
    return not ack.duplicate


async def publish_failure(
    actor: Actor,
    dispatch: Dispatch,
    error: ErrorInfo,
    *,
    streamed: bool = False,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
) -> None:
    """Tell the router that this attempt failed (it falls back or answers with a typed error)."""
    request_id = dispatch.request.id
    failure = AttemptFailed(
        request_id=request_id,
        attempt=dispatch.attempt,
        target=dispatch.target.where,
        model=dispatch.target.model,
        tier=dispatch.target.tier,
        error=error,
        streamed=streamed,
        usage=usage or Usage(),
        cost_usd=cost_usd,
        client_key=dispatch.request.client_key,
        parent_id=dispatch.parent_id,
        created_at=time.time(),
        reservation_id=dispatch.reservation_id,
        reserved_nanos=dispatch.reserved_nanos,
    )
    subject = subjects.attempt_failed(request_id, dispatch.request.origin)
    await actor.publish(subject, failure, msg_id=f"{request_id}:{dispatch.attempt}:failed")


class ChunkSender:
    """Token chunks of one attempt, numbered, on core NATS (not stored)."""

    def __init__(self, actor: Actor, request_id: str, attempt: int, origin: str) -> None:
        self.actor, self.request_id, self.attempt = actor, request_id, attempt
        self.index = 0
        self.subject = subjects.chunks(request_id, origin)

    @property
    def sent(self) -> bool:
        return self.index > 0

    async def send(
        self,
        text: str,
        *,
        done: bool = False,
        finish_reason: FinishReason | None = None,
        tool_calls: list[ToolCallDelta] | None = None,
    ) -> None:
        chunk = StreamChunk(
            request_id=self.request_id,
            attempt=self.attempt,
            index=self.index,
            text=text,
            done=done,
            finish_reason=finish_reason,
            tool_calls=tool_calls or [],
        )
        self.index += 1
        await self.actor.publish_core(self.subject, chunk)

    async def send_pieces(self, pieces: list[str | ToolCallDelta]) -> None:
        """Text pieces and function-call deltas, in order, one chunk each."""
        for piece in pieces:
            if isinstance(piece, str):
                await self.send(piece)
            else:
                await self.send("", tool_calls=[piece])


class StreamFollower:
    """A streamed answer as a reader must show it: the text of one generation, never two glued.

    Once the reader holds text of one attempt, chunks of any other attempt are dropped. A generation of
    the same attempt can begin again too: a gpu_host killed mid-answer has its dispatch redelivered to
    its restarted process, which numbers its chunks from 0 again; a chunk whose index goes back marks
    that, and from then on that attempt's chunks are dropped as well. If the stored answer is not the
    one whose beginning the reader holds, ``outcome`` turns it into one typed error (the answer was cut).
    Pure: no I/O."""

    def __init__(self) -> None:
        self.attempt: int | None = None  # the attempt whose text the reader holds
        self.next_index = 0
        self.restarted = False  # that attempt began again after the reader had part of it

    @property
    def streamed(self) -> bool:
        return self.attempt is not None

    def accept(self, chunk: StreamChunk) -> bool:
        """Whether the reader shows this chunk."""
        if self.attempt is None:
            if chunk.text or chunk.tool_calls:
                self.attempt, self.next_index = chunk.attempt, chunk.index + 1
            return True
        if chunk.attempt != self.attempt or self.restarted:
            return False
        if chunk.index < self.next_index:
            self.restarted = True
            return False
        self.next_index = chunk.index + 1
        return True

    def outcome(self, outcome: Outcome) -> Outcome:
        if not isinstance(outcome, GenerateResult) or self.attempt is None:
            return outcome
        if outcome.attempt == self.attempt and not self.restarted:
            return outcome
        how = "began again" if outcome.attempt == self.attempt else "failed"
        return GenerateError(
            request_id=outcome.request_id,
            error=ErrorInfo.of(
                "unavailable", f"the answer was cut: attempt {self.attempt} {how} after streaming part of it"
            ),
            created_at=time.time(),
        )
