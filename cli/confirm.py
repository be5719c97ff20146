"""An operator command to the diversity_monitor, and the event by which the monitor confirms it (CLI side).

    ev = await command_confirmed(nc, cmd, "review.decided", lambda ev: ..., wait=10.0)   # None: no answer

The subscription to the confirming event is made before the command is stored, so a fast monitor's
answer is never missed; an event that does not decode is skipped (the bus carries other writers' kinds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bus import subjects
from schemas.codec import EVENT, encode
from schemas.errors import SchemaError
from schemas.events import Event


async def command_confirmed(
    nc: Any, cmd: Any, kind: str, matches: Callable[[Event], bool], *, wait: float
) -> Event | None:
    sub = await nc.subscribe(subjects.event_of(kind))
    try:
        await nc.jetstream().publish(subjects.command(cmd), encode(cmd))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                return None
            try:
                ev = EVENT.decode(msg.data)
            except SchemaError:
                continue
            if matches(ev):
                return ev
        return None
    finally:
        await sub.unsubscribe()
