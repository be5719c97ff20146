"""What a ``SetTier`` command does to a tier (pure). The budget_guard is the one writer of
``orch_tiers``; the router reads it and stops using a disabled tier.

    disable, until=T      disabled until T (a spike sends T = the next local midnight)
    disable, until=None   disabled until an operator enables it
    enable,  until=None   enabled (an operator): ends any disable
    enable,  until=T      a scheduled re-enable: ends only the disable that runs until T, so a
                          schedule never cuts short a newer or longer disable
Disabling a tier that is already disabled keeps the longer of the two (no end beats any end).
A disable whose ``until`` has passed is stale and changes nothing.
"""

from __future__ import annotations

from schemas.commands import SetTier
from schemas.events import Event, TierDisabled, TierEnabled
from schemas.state import TierState

_SAME_TIME = 1e-3  # seconds: the until of a schedule and of the state it ends


def apply_command(current: TierState | None, cmd: SetTier, now: float) -> TierState | None:
    """The tier's new state, or None when the command changes nothing."""
    enabled_now = current is None or current.enabled
    who = cmd.by or "someone"
    if cmd.enabled:
        if enabled_now:
            return None
        assert current is not None
        if cmd.until is not None and (current.until is None or abs(current.until - cmd.until) > _SAME_TIME):
            return None
        reason = cmd.reason or f"enabled by {who}"
        return TierState(tier=cmd.tier, enabled=True, reason=reason, until=None, changed_at=now)
    if cmd.until is not None and cmd.until <= now:
        return None
    until = cmd.until
    if not enabled_now:
        assert current is not None
        if current.until is None or (until is not None and current.until >= until):
            return None
        until = None if until is None else max(until, current.until)
    reason = cmd.reason or f"disabled by {who}"
    return TierState(tier=cmd.tier, enabled=False, reason=reason, until=until, changed_at=now)


def event_for(state: TierState) -> Event:
    if state.enabled:
        return TierEnabled(tier=state.tier, reason=state.reason)
    return TierDisabled(tier=state.tier, reason=state.reason, until=state.until)


def overdue(state: TierState, now: float) -> bool:
    """A disable whose end has passed (the schedule did not run: the guard was down)."""
    return not state.enabled and state.until is not None and state.until <= now
