"""Publishing outcomes the way the protocol requires (docs/protocol.md), for workers and the router.

await publish_outcome(actor, result_or_error, origin)  # orch.result.<origin>.<id>, Msg-Id <id>: stored once
await publish_failure(actor, dispatch, error, ...)      # orch.result.<origin>.<id>.failed for the router
chunks = ChunkSender(actor, request_id, attempt, origin)  # orch.stream.<origin>.<id>, core NATS

``origin`` is the request's (``request.origin``): the one who asked reads its answers there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bus import subjects
from schemas.dispatch import Dispatch
from schemas.errors import ErrorInfo
from schemas.result import AttemptFailed, FinishReason, Outcome, StreamChunk, ToolCallDelta, Usage

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
