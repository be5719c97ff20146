"""The review queue and the measured quality, the I/O around quality.py: the monitor is the one writer
of both buckets.

    escalated (ensemble.escalated event)      -> a pending ReviewItem in orch_reviews (once per request)
    validation.compared / validation.skipped  -> the local model's ModelQuality in orch_quality
    an evaluator's verdict (grading.py)       -> the generator's ModelQuality in orch_quality (score >= 4 passes)
    review.decide (the operator's command)    -> the item decided, each model credited or debited in
                                                 orch_quality, and a review.decided event

Events come from a durable consumer of their own, so none is missed while the monitor is down; each
quality record keeps the last EVENTS sequence folded in, so a redelivered event is not counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext

from actors.diversity_monitor import quality
from bus import subjects
from bus.kv import LiveView, TypedKV
from schemas.codec import Codec
from schemas.commands import DecideReview
from schemas.events import AnyEvent, Escalated, Event, ValidationCompared, ValidationSkipped
from schemas.review import ModelQuality, ReviewItem

log = logging.getLogger(__name__)
NEWEST = 5  # items the dashboard's card lists

EVENT_SUBJECTS = subjects.REVIEW_EVENTS

Emit = Callable[[Event], Awaitable[None]]


class Reviews:
    def __init__(self, js: JetStreamContext, emit: Emit, window: int) -> None:
        self.js, self.emit, self.window = js, emit, window
        self.lock = asyncio.Lock()  # two consumers write orch_quality: one read-modify-write at a time
        self.queue: LiveView[ReviewItem] = LiveView(js, subjects.KV_REVIEWS, Codec(ReviewItem))
        self.items: TypedKV[ReviewItem] | None = None
        self.quality: TypedKV[ModelQuality] | None = None

    async def open(self) -> None:
        self.items = await TypedKV.open(self.js, subjects.KV_REVIEWS, Codec(ReviewItem))
        self.quality = await TypedKV.open(self.js, subjects.KV_QUALITY, Codec(ModelQuality))

    async def on_event(self, ev: AnyEvent, seq: int) -> None:
        match ev:
            case Escalated():
                await self.escalated(ev)
            case ValidationCompared():
                await self.check(ev.model, ev.agreed, compared=True, seq=seq)
            case ValidationSkipped() if ev.model:
                await self.skip(ev.model, ev.reason, seq)

    async def escalated(self, ev: Escalated) -> None:
        assert self.items is not None
        if await self.items.get(ev.request_id) is not None:
            return  # queued already (a redelivery), or decided
        await self.items.put(ev.request_id, quality.queued(ev, time.time()))
        log.info("review queued: %s (consistency %.2f < %.2f)", ev.request_id, ev.consistency, ev.threshold)

    async def check(self, model: str, passed: bool, *, compared: bool, evaluated: bool = False, seq: int = 0) -> None:
        assert self.quality is not None
        async with self.lock:
            old = await self.quality.get(model)
            if seq and old is not None and seq <= old.last_seq:
                return  # folded in already
            new = quality.checked(
                old, model, passed, self.window, time.time(), compared=compared, evaluated=evaluated, event_seq=seq
            )
            await self.quality.put(model, new)

    async def skip(self, model: str, reason: str, seq: int) -> None:
        assert self.quality is not None
        async with self.lock:
            old = await self.quality.get(model)
            if old is not None and seq <= old.last_seq:
                return
            await self.quality.put(model, quality.skipped(old, model, reason, time.time(), seq))

    async def decide(self, cmd: DecideReview) -> None:
        """An operator's decision: the item, then each model's record, then the event (what the CLI waits for)."""
        assert self.items is not None
        item = await self.items.get(cmd.request_id)
        if item is None:
            log.warning("decision on %s, which is not in the review queue (by %s)", cmd.request_id, cmd.by or "?")
            return
        outcome = quality.decide(item, cmd, time.time())
        if isinstance(outcome, str):
            log.warning("decision refused: %s (by %s)", outcome, cmd.by or "?")
            return
        decided, event = outcome
        await self.items.put(cmd.request_id, decided)
        for model in event.credited:
            await self.check(model, True, compared=False)
        for model in event.debited:
            await self.check(model, False, compared=False)
        await self.emit(event)

    def board(self) -> dict[str, Any]:
        """The dashboard's review card: how many wait, the newest of them."""
        pending = sorted(
            (i for i in self.queue.data.values() if i.status == "pending"), key=lambda i: i.queued_at, reverse=True
        )
        return {
            "pending": len(pending),
            "newest": [
                {
                    "request_id": i.request_id,
                    "queued_at": i.queued_at,
                    "consistency": i.consistency,
                    "models": [r.provenance.model for r in i.responses],
                    "prompt": i.prompt[:120],
                }
                for i in pending[:NEWEST]
            ],
        }
