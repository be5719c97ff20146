"""The writer of ``orch_tiers`` (inside the budget_guard): applies ``SetTier`` commands in order and
re-enables a tier at its ``until`` with apscheduler.

Every change is an event first (``tier.disabled`` / ``tier.enabled``, Msg-Id from the command's
stream sequence, so a redelivered command emits once), then the KV record the router follows. The
scheduled re-enable is itself a command on the bus (``by: budget_guard:schedule``), so the audit
trail shows who did what; a sweep sends it again if the guard was down at the time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from nats.js import JetStreamContext

from actors.budget_guard.tiers import apply_command, event_for, overdue
from bus import subjects
from bus.consumer import Delivery
from bus.errors import Permanent
from bus.kv import TypedKV
from schemas.base import TIERS, Tier
from schemas.codec import COMMAND, Codec
from schemas.commands import SetTier
from schemas.events import Event
from schemas.state import TierState

log = logging.getLogger(__name__)

EventOnce = Callable[[Event, str], Awaitable[None]]
Due = Callable[[Tier, float], Awaitable[None]]  # the scheduled re-enable of a tier disabled until then


class Publish(Protocol):
    """Store a message in JetStream (``Actor.publish``)."""

    async def __call__(self, subject: str, obj: Any, *, msg_id: str | None = None, timeout: float = 30.0) -> Any: ...


def when(t: float | None, tz: tzinfo) -> str:
    return "an operator enables it" if t is None else datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")


class TierKeeper:
    """``by``: who sends its commands (the actor's name); ``due``: what the scheduler calls at a disable's end."""

    def __init__(self, by: str, tz: tzinfo, *, event_once: EventOnce, publish: Publish, due: Due) -> None:
        self.by, self.tz, self.event_once, self.publish, self.due = by, tz, event_once, publish, due
        self.states: dict[str, TierState] = {}
        self.scheduler = AsyncIOScheduler(timezone=tz)
        self._kv: TypedKV[TierState] | None = None

    async def start(self, js: JetStreamContext) -> None:
        """Load the states (they outlive the process), write the missing ones as enabled, schedule."""
        self._kv = await TypedKV.open(js, subjects.KV_TIERS, Codec(TierState))
        self.states = await self._kv.items()
        for tier in TIERS:
            if tier not in self.states:
                self.states[tier] = TierState(tier=tier, enabled=True, reason="initial", changed_at=time.time())
                await self._kv.put(tier, self.states[tier])
        self.scheduler.start()
        for state in self.states.values():
            self._schedule(state)

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def disabled(self) -> set[str]:
        return {t for t, s in self.states.items() if not s.enabled}

    async def command(self, d: Delivery) -> None:
        """A delivery of ``orch.cmd.tier.*`` (its consumer has concurrency 1: in order)."""
        cmd = COMMAND.decode(d.data)
        if not isinstance(cmd, SetTier):
            raise Permanent(f"not a tier command: {type(cmd).__name__}")
        state = apply_command(self.states.get(cmd.tier), cmd, time.time())
        verb = "enable" if cmd.enabled else "disable"
        if state is None:
            log.info("tier %s: %s by %s changes nothing", cmd.tier, verb, cmd.by)
            return
        await self.event_once(event_for(state), f"tier:{d.stream_seq}")
        assert self._kv is not None
        await self._kv.put(cmd.tier, state)
        self.states[cmd.tier] = state
        until = "" if state.enabled else f" (until {when(state.until, self.tz)})"
        log.warning("tier %s %sd by %s: %s%s", cmd.tier, verb, cmd.by, state.reason, until)
        self._schedule(state)

    def _schedule(self, state: TierState) -> None:
        job_id = f"reenable:{state.tier}"
        if state.enabled or state.until is None:
            if self.scheduler.get_job(job_id):
                self.scheduler.remove_job(job_id)
            return
        self.scheduler.add_job(
            self.due,
            DateTrigger(run_date=datetime.fromtimestamp(max(state.until, time.time()), self.tz)),
            args=[state.tier, state.until],
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def reenable(self, tier: Tier, until: float) -> None:
        """Ask for the end of the disable that runs until ``until`` (a newer one is left alone)."""
        by = f"{self.by}:schedule"
        reason = f"scheduled re-enable (disabled until {when(until, self.tz)})"
        cmd = SetTier(tier=tier, enabled=True, until=until, reason=reason, at=time.time(), by=by)
        try:
            await self.publish(subjects.command(cmd), cmd, msg_id=f"reenable:{tier}:{until}", timeout=10.0)
        except Exception as exc:
            log.warning("could not re-enable tier %s (the sweep tries again): %s", tier, exc)

    async def sweep(self, now: float) -> None:
        for state in list(self.states.values()):
            if overdue(state, now) and state.until is not None:
                await self.reenable(state.tier, state.until)

    async def disable(self, tier: Tier, until: float | None, reason: str, msg_id: str) -> None:
        """Send the command that disables a tier (the cost spike's remediation)."""
        log.warning("%s: disabling tier %s until %s", reason, tier, when(until, self.tz))
        cmd = SetTier(tier=tier, enabled=False, until=until, reason=reason, at=time.time(), by=self.by)
        await self.publish(subjects.command(cmd), cmd, msg_id=msg_id)
