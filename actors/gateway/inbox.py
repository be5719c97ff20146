"""One subscription per gateway for every answer it waits for (like nats-py's own request mux):
``orch.*.gw.*`` carries both ``orch.stream.gw.<id>`` chunks and the ``orch.result.gw.<id>`` outcome of the
requests the gateway published (origin ``gw``), on a single subscription so that their order is kept;
each waiting request reads its own queue.

Opening a waiter is a dict insert instead of a SUB/UNSUB per request. A duplicate outcome (one JetStream
refused) finds no waiter once the first was taken.

    inbox = Inbox(nc)
    await inbox.start(heard)          # heard(msg): the gateway turns each message into one of its own
    queue = inbox.open(request_id)    # ... and its handle puts the answer here: inbox.put(answer)
    answer = await next_answer(queue, timeout)   # or TimeoutError
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from actors.gateway.messages import Answer
from bus.subjects import ORIGIN_GATEWAY, answers_of

ANSWERS = answers_of(ORIGIN_GATEWAY)


class _Expired:
    """What a wait's timer puts in the queue: one per wait, so a timer that fired just after its answer
    came cannot end a later wait."""


async def next_answer(queue: asyncio.Queue[Any], timeout: float) -> Answer:
    """The next answer in ``queue``, or TimeoutError after ``timeout`` seconds: one timer, where
    ``asyncio.wait_for(queue.get())`` would make a task and a future for every wait."""
    if not queue.empty():
        answer = queue.get_nowait()
        if not isinstance(answer, _Expired):
            return answer
    expired = _Expired()
    timer = asyncio.get_running_loop().call_later(timeout, queue.put_nowait, expired)
    try:
        while True:
            answer = await queue.get()
            if answer is expired:
                raise TimeoutError
            if not isinstance(answer, _Expired):  # else an earlier wait's timer: passed over
                return answer
    finally:
        timer.cancel()


class Inbox:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.waiting: dict[str, asyncio.Queue[Answer]] = {}
        self._sub: Any = None

    async def start(self, heard: Callable[[Msg], Awaitable[None]]) -> None:
        self._sub = await self.nc.subscribe(ANSWERS, cb=heard, pending_msgs_limit=-1)
        await self.nc.flush()  # the server has it before the first request goes out

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def put(self, answer: Answer) -> None:
        queue = self.waiting.get(answer.request_id)
        if queue is not None:
            queue.put_nowait(answer)

    def open(self, request_id: str) -> asyncio.Queue[Answer]:
        queue: asyncio.Queue[Answer] = asyncio.Queue()
        self.waiting[request_id] = queue
        return queue

    def close(self, request_id: str) -> None:
        self.waiting.pop(request_id, None)
