"""The overflow switches' one writer, pure: a SetOverflow command against the bucket's current entry.

    switch(current, cmd, now) -> the new OverflowState of ``key_of(cmd.model)``, or None (switched off)

Switching on again keeps the entry's ``since`` and adds the sender to ``enabled_by`` (scaling switches off
an overflow only if it switched it on, whoever switched it on later as well); switching off removes it.
"""

from __future__ import annotations

from schemas.commands import SetOverflow
from schemas.state import OverflowState


def switch(current: OverflowState | None, cmd: SetOverflow, now: float) -> OverflowState | None:
    if not cmd.enabled:
        return None
    enabled_by = [*current.enabled_by] if current is not None else []
    if cmd.by not in enabled_by:
        enabled_by.append(cmd.by)
    return OverflowState(
        model=cmd.model,
        tier=cmd.tier,
        by=cmd.by,
        enabled_by=enabled_by,
        reason=cmd.reason,
        since=current.since if current is not None else (cmd.at or now),
    )
