"""How far the budget_guard has charged RESULTS: a time before which every stored result is charged.

The ledger lets a hold expire only once that time is past the hold's expiry (``Ledger.charged_through``),
so a result that settles a hold never finds it gone because the guard read it late: it was down and
restarts with a backlog, it is behind, or it could not store a charge and gets it again later.

Each tick (``observe``, pure; ``read`` asks the server) the guard looks at its RESULTS consumer:

    nothing undelivered and nothing unacknowledged    -> every result stored before the tick is charged
    else: remember (tick time, the stream's last sequence then); once the consumer's ack floor reaches
          that sequence, every result stored before that tick is charged

A result is acknowledged after its charge is applied (or after it was dead-lettered), so an
acknowledged sequence is a charged one. The tick time is taken before the server is asked.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import nats.errors
from nats.js.client import JetStreamContext

EVERY = 1.0


@dataclass(frozen=True)
class ConsumerState:
    at: float  # taken before the server was asked
    undelivered: int
    unacked: int
    ack_floor: int  # stream sequence: this and everything before it is acknowledged
    last_seq: int  # the stream's last sequence (read after ``at``); 0 when not needed


class Watermark:
    def __init__(self, keep: int = 120) -> None:
        self._marks: deque[tuple[float, int]] = deque(maxlen=keep)  # (tick time, last sequence then)

    def observe(self, s: ConsumerState) -> float | None:
        """The time before which every result is charged now, or None when that did not move."""
        if s.undelivered == 0 and s.unacked == 0:
            self._marks.clear()
            return s.at
        through = None
        while self._marks and self._marks[0][1] <= s.ack_floor:
            through = self._marks.popleft()[0]
        self._marks.append((s.at, s.last_seq))
        return through


async def read(js: JetStreamContext, stream: str, durable: str) -> ConsumerState | None:
    """The consumer's state now (None: it does not exist yet, or the server did not answer)."""
    at = time.time()
    try:
        info = await js.consumer_info(stream, durable)
        undelivered, unacked = info.num_pending or 0, info.num_ack_pending or 0
        last = (await js.stream_info(stream)).state.last_seq if undelivered or unacked else 0
    except (nats.errors.Error, TimeoutError):
        return None
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    return ConsumerState(at=at, undelivered=undelivered, unacked=unacked, ack_floor=floor or 0, last_seq=last)
