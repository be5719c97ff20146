"""The overflow switches as the readers see them: ``orch_overflow`` (written by the rotator alone, from
the SetOverflow commands of its scaling and of the monitor's remediation), watched.

    overflow = Overflow(js)           # spawn overflow.run; overflow.ready once the bucket was read
    overflow.tiers()                  # {model or '*': the cloud tier its local work goes to now}
    overflow.switches()               # {model or '*': OverflowState}: who switched each on, and why

``tiers()`` is what a routing snapshot takes: the same dict until the bucket changes (no copy per request).
"""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from bus.kv import LiveView
from bus.subjects import KV_OVERFLOW
from schemas.base import Tier
from schemas.codec import Codec
from schemas.state import OverflowState

ALL = "*"  # the key of an overflow of every local model


def key_of(model: str | None) -> str:
    return model or ALL


class Overflow:
    def __init__(self, js: JetStreamContext) -> None:
        self.view: LiveView[OverflowState] = LiveView(js, KV_OVERFLOW, Codec(OverflowState), self._changed)
        self._seen: dict[str, OverflowState] | None = None  # the view's data that _tiers was made from
        self._tiers: dict[str, Tier] = {}

    @property
    def ready(self) -> asyncio.Event:
        return self.view.ready

    async def run(self) -> None:
        await self.view.run()

    def switches(self) -> dict[str, OverflowState]:
        return dict(self.view.data)

    def tiers(self) -> dict[str, Tier]:
        data = self.view.data  # replaced as a whole when the watch (re)starts, changed in place after
        if data is not self._seen:
            self._tiers = {key: switch.tier for key, switch in data.items()}
            self._seen = data
        return self._tiers

    def _changed(self, key: str, switch: OverflowState | None) -> None:
        self._seen = None
