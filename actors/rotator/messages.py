"""What the rotator handles: the one union its ``handle`` matches on.

    PhaseCommand(d)        SetPhase / Rotate from its COMMANDS consumer (in order)
    OverflowCommand(d)     SetOverflow from its overflow consumer (it is the one writer of orch_overflow)
    ModelEvent(data)       a gpu_host's model.* / oom event (core NATS): what the executor follows
    HostChanged(name, s)   a host's state in orch_hosts changed (the KV watch)
    ScaleTick()            a look at the queue depths (every ``scale_every``)
    RotationDue()          the scheduled rotation's time came (apscheduler)

Consumers, watches and timers only make these; ``handle`` matches on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.consumer import Delivery
from schemas.state import HostState


@dataclass(frozen=True)
class PhaseCommand:
    d: Delivery


@dataclass(frozen=True)
class OverflowCommand:
    d: Delivery


@dataclass(frozen=True)
class ModelEvent:
    data: bytes


@dataclass(frozen=True)
class HostChanged:
    name: str
    state: HostState | None


@dataclass(frozen=True)
class ScaleTick:
    pass


@dataclass(frozen=True)
class RotationDue:
    pass


RotatorMsg = PhaseCommand | OverflowCommand | ModelEvent | HostChanged | ScaleTick | RotationDue
