"""Queue depth per target, from the router's own in-flight counts and JetStream's pending counts of
the workers' consumers. A target over ``router.backlog_depth`` for ``router.backlog_wait`` is marked
backlogged (new work prefers other targets), gets a ``queue.backlog`` event and a QueueState in KV."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from actors.router.pending import Pending, dispatch_subject
from bus import subjects
from bus.kv import TypedKV
from policy.targets import target_key
from schemas.codec import Codec
from schemas.config.actors import RouterCfg
from schemas.events import Event, QueueBacklog
from schemas.state import QueueState

log = logging.getLogger(__name__)
PERIOD = 2.0


def backlog_targets(
    depths: dict[str, int], over_since: dict[str, float], now: float, threshold: int, wait: float
) -> set[str]:
    """Pure: targets whose depth has stayed over the threshold for ``wait`` seconds.
    Updates ``over_since`` (target -> when it first went over); a target under threshold/2 clears."""
    for key, depth in depths.items():
        if depth > threshold:
            over_since.setdefault(key, now)
        elif depth <= threshold // 2:
            over_since.pop(key, None)
    for key in list(over_since):
        if key not in depths:
            over_since.pop(key)
    return {k for k, t in over_since.items() if now - t >= wait}


class QueueWatch:
    """One turn every ``PERIOD`` (``tick``): given the router's in-flight requests, it marks backlogged
    targets (``mark_backlog``, the view's set), announces new ones and writes every QueueState."""

    def __init__(
        self,
        js: JetStreamContext,
        cfg: RouterCfg,
        *,
        emit: Callable[[Event], Awaitable[None]],
        mark_backlog: Callable[[set[str]], None],
    ) -> None:
        self.js = js
        self.cfg = cfg
        self.emit = emit
        self.mark_backlog = mark_backlog
        self.over_since: dict[str, float] = {}
        self.kv: TypedKV[QueueState] | None = None
        self.written: set[str] = set()  # targets with a QueueState in KV
        self.alarmed: set[str] = set()  # targets already announced as backlogged

    async def depths(self, in_flight: list[Pending]) -> tuple[dict[str, int], dict[str, float]]:
        """Pending dispatches per target key, and the age of the oldest one the router knows."""
        depth: dict[str, int] = {}
        oldest: dict[str, float] = {}
        subject: dict[str, str] = {}  # target key -> its dispatch subject
        now = time.time()
        for p in in_flight:
            if p.target is not None:
                key = target_key(p.target)
                depth[key] = depth.get(key, 0) + 1
                oldest[key] = max(oldest.get(key, 0.0), now - p.dispatched_at)
                subject[key] = dispatch_subject(p.target)
        try:  # shared across router instances: what waits in the workers' consumers
            for info in await self.js.consumers_info(subjects.DISPATCH_STREAM):
                filt = info.config.filter_subject or ""
                waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
                for key in list(depth):
                    if subjects.subject_matches(subject[key], filt):
                        depth[key] = max(depth[key], waiting)
        except Exception as exc:  # the stream may not have consumers yet
            log.debug("consumer info: %s", exc)
        return depth, oldest

    async def tick(self, in_flight: list[Pending]) -> None:
        cfg = self.cfg
        if self.kv is None:
            self.kv = await TypedKV.open(self.js, subjects.KV_QUEUES, Codec(QueueState))
        depth, oldest = await self.depths(in_flight)
        now = time.time()
        backlog = backlog_targets(depth, self.over_since, now, cfg.backlog_depth, float(cfg.backlog_wait))
        self.mark_backlog(backlog)
        for key in backlog - self.alarmed:
            await self.emit(
                QueueBacklog(
                    target=key,
                    depth=depth.get(key, 0),
                    oldest_wait_s=oldest.get(key, 0.0),
                    threshold=cfg.backlog_depth,
                )
            )
        self.alarmed = set(backlog)
        for key in set(depth) | self.written:
            state = QueueState(
                target=key,
                depth=depth.get(key, 0),
                oldest_wait_s=round(oldest.get(key, 0.0), 3),
                backlog=key in backlog,
                updated_at=now,
            )
            await self.kv.put(key, state)
        self.written = set(depth)
