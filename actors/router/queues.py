"""Queue depth per target, from the router's own in-flight counts and JetStream's pending counts of
the workers' consumers. A target over ``router.backlog_depth`` for ``router.backlog_wait`` is marked
backlogged (new work prefers other targets), gets a ``queue.backlog`` event and a QueueState in KV."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bus import subjects
from bus.kv import TypedKV
from policy.targets import target_key
from schemas.codec import Codec
from schemas.events import QueueBacklog
from schemas.state import QueueState

if TYPE_CHECKING:
    from actors.router.actor import Router

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
    def __init__(self, router: Router) -> None:
        self.router = router
        self.over_since: dict[str, float] = {}

    async def depths(self) -> tuple[dict[str, int], dict[str, float]]:
        """Pending dispatches per target key, and the age of the oldest one the router knows."""
        depth: dict[str, int] = {}
        oldest: dict[str, float] = {}
        now = time.time()
        for p in self.router.flow.pending.values():
            if p.target is not None and not p.done:
                key = target_key(p.target)
                depth[key] = depth.get(key, 0) + 1
                oldest[key] = max(oldest.get(key, 0.0), now - p.dispatched_at)
        try:  # shared across router instances: what waits in the workers' consumers
            for info in await self.router.js.consumers_info("DISPATCH"):
                filt = info.config.filter_subject or ""
                waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
                prefix = filt.rstrip(">").rstrip(".")
                for key in list(depth):
                    tier, where, model = key.split(":", 2)
                    subject = (
                        subjects.dispatch_host(where, model)
                        if tier == "local"
                        else subjects.dispatch_cloud(where, model)
                    )
                    if prefix and subject.startswith(prefix):
                        depth[key] = max(depth[key], waiting)
        except Exception as exc:  # the stream may not have consumers yet
            log.debug("consumer info: %s", exc)
        return depth, oldest

    async def run(self) -> None:
        cfg = self.router.cfg.router
        kv: TypedKV[QueueState] = await TypedKV.open(self.router.js, subjects.KV_QUEUES, Codec(QueueState))
        written: set[str] = set()  # targets with a QueueState in KV
        alarmed: set[str] = set()  # targets already announced as backlogged
        while True:
            await asyncio.sleep(PERIOD)
            depth, oldest = await self.depths()
            now = time.time()
            backlog = backlog_targets(depth, self.over_since, now, cfg.backlog_depth, float(cfg.backlog_wait))
            self.router.view.backlog.clear()
            self.router.view.backlog.update(backlog)
            for key in backlog - alarmed:
                await self.router.emit(
                    QueueBacklog(
                        target=key,
                        depth=depth.get(key, 0),
                        oldest_wait_s=oldest.get(key, 0.0),
                        threshold=cfg.backlog_depth,
                    )
                )
            alarmed = set(backlog)
            for key in set(depth) | written:
                state = QueueState(
                    target=key,
                    depth=depth.get(key, 0),
                    oldest_wait_s=round(oldest.get(key, 0.0), 3),
                    backlog=key in backlog,
                    updated_at=now,
                )
                await kv.put(key, state)
            written = set(depth)
