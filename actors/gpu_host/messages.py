"""What the gpu_host handles: the one union its ``handle`` matches on.

DispatchArrived(d)   orch.dispatch.host.<host>.<model> from its DISPATCH consumer: generate, answer once
CommandArrived(d)    LoadModel / UnloadModel / SwapModels from its COMMANDS consumer (in order)
StateTick(sweep)     the host's record changed, or a heartbeat passed: write it to KV (``sweep``: expire
                     keep-alives first, once per heartbeat)
Preload()            once at start: load the hot models this host serves
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.consumer import Delivery


@dataclass(frozen=True)
class DispatchArrived:
    d: Delivery


@dataclass(frozen=True)
class CommandArrived:
    d: Delivery


@dataclass(frozen=True)
class StateTick:
    sweep: bool


@dataclass(frozen=True)
class Preload:
    pass


HostMsg = DispatchArrived | CommandArrived | StateTick | Preload
