"""One subscription per gateway for every answer it waits for (like nats-py's own request mux):
``orch.*.gw.*`` carries both ``orch.stream.gw.<id>`` chunks and the ``orch.result.gw.<id>`` outcome of the
requests the gateway published (origin ``gw``), on a single subscription so that their order is kept;
each waiting request reads its own queue.

Opening a waiter is a dict insert instead of a SUB/UNSUB per request. A duplicate outcome (one JetStream
refused) finds no waiter once the first was taken.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bus.subjects import ORIGIN_GATEWAY, PREFIX, answers_of

ANSWERS = answers_of(ORIGIN_GATEWAY)
_RESULT = f"{PREFIX}.result."
_STREAM = f"{PREFIX}.stream."


class Inbox:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.waiting: dict[str, asyncio.Queue[Msg]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(ANSWERS, cb=self._on_msg, pending_msgs_limit=-1)
        await self.nc.flush()  # the server has it before the first request goes out

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        subject = msg.subject
        if subject.startswith(_RESULT) or subject.startswith(_STREAM):
            queue = self.waiting.get(subject[subject.rfind(".") + 1 :])
            if queue is not None:
                queue.put_nowait(msg)

    def open(self, request_id: str) -> asyncio.Queue[Msg]:
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.waiting[request_id] = queue
        return queue

    def close(self, request_id: str) -> None:
        self.waiting.pop(request_id, None)
