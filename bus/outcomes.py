"""Publishing outcomes the way the protocol requires (docs/protocol.md), for workers and the router.

await publish_outcome(actor, result_or_error, origin)  # orch.result.<origin>.<id>, Msg-Id <id>: stored once
await publish_failure(actor, dispatch, error, ...)      # orch.result.<origin>.<id>.failed for the router
chunks = ChunkSender(actor, request_id, attempt, origin)  # orch.stream.<origin>.<id>, core NATS
follow = StreamFollower()       # a reader's side: which chunks belong to the one answer it shows

``origin`` is the request's (``request.origin``): the one who asked reads its answers there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bus import subjects
from schemas.dispatch import Dispatch
from schemas.errors import ErrorInfo
from schemas.result import (
    AttemptFailed,
    FinishReason,
    GenerateError,
    GenerateResult,
    Outcome,
    StreamChunk,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from bus.actor import Actor


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
