"""Test client: publish a request the way clients must (subscribe first), wait for its outcome."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from bus import subjects
from schemas.codec import CHUNK, OUTCOME, encode
from schemas.request import GenerateRequest
from schemas.result import Outcome, StreamChunk


async def ask(nc: NATS, request: GenerateRequest, timeout: float = 30.0) -> Outcome:
    sub = await nc.subscribe(subjects.result(request.id))
    await nc.jetstream().publish(
        subjects.request(request.priority, request.id), encode(request), headers={"Nats-Msg-Id": request.id}
    )
    try:
        msg = await sub.next_msg(timeout=timeout)
    finally:
        await sub.unsubscribe()
    return OUTCOME.decode(msg.data)


async def ask_streaming(nc: NATS, request: GenerateRequest, timeout: float = 30.0) -> tuple[list[StreamChunk], Outcome]:
    chunks: list[StreamChunk] = []
    sub = await nc.subscribe(f"{subjects.PREFIX}.*.{request.origin}.{request.id}")
    await nc.jetstream().publish(
        subjects.request(request.priority, request.id), encode(request), headers={"Nats-Msg-Id": request.id}
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=timeout)
            if msg.subject.startswith(f"{subjects.PREFIX}.stream."):
                chunks.append(CHUNK.decode(msg.data))
            else:
                return chunks, OUTCOME.decode(msg.data)
    finally:
        await sub.unsubscribe()


async def outcomes_stored(nc: NATS, request_id: str) -> int:
    """Final outcomes stored for the request id, under any origin (exactly one is the rule)."""
    wanted = f"{subjects.PREFIX}.result.*.{request_id}"
    info = await nc.jetstream().stream_info("RESULTS", subjects_filter=wanted)
    return sum((info.state.subjects or {}).values())


async def gather_events(nc: NATS, subject: str, into: list[bytes]) -> object:
    async def cb(msg: object) -> None:
        into.append(msg.data)  # type: ignore[attr-defined]

    return await nc.subscribe(subject, cb=cb)


__all__ = ["ask", "ask_streaming", "asyncio", "gather_events", "outcomes_stored"]
