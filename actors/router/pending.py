"""What the router holds for each request it owns, until exactly one outcome exists (flow.py moves it).

Pending   one request (or one fan-out child): its plan, current attempt, timers
FanOut    a diverse / ensemble request: its children and what they answered
settled(p, attempt)   whether nothing more is to be done for it (or for that attempt of it)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bus import subjects
from bus.consumer import Delivery
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest
from schemas.result import Outcome

# Before a paid attempt: returns (reservation id, nano-dollars held for it), an ErrorInfo when the budget
# refuses, or None (no budget_guard, and attempts may go ahead unreserved).
Reserve = Callable[[GenerateRequest, Target, int], Awaitable["tuple[str, int] | ErrorInfo | None"]]


@dataclass(eq=False)
class Pending:
    request: GenerateRequest
    plan: list[Target]
    strategy: str = ""
    route: str | None = None
    delivery: Delivery | None = None  # the held REQUESTS message; None for fan-out children
    parent: FanOut | None = None
    prompt_variant: str | None = None
    attempt: int = -1
    target: Target | None = None
    dispatched_at: float = 0.0
    started: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    done: bool = False
    last_error: ErrorInfo | None = None
    counted: bool = False  # its attempt is counted in the view's in-flight figure (ended exactly once)


@dataclass(eq=False)
class FanOut:
    request: GenerateRequest
    delivery: Delivery
    children: dict[str, Pending] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    models: list[str] | None = None  # ensemble members named by a route (primary + validators)
    threshold: float = 0.7
    started: float = field(default_factory=time.monotonic)
    done: bool = False


def settled(p: Pending | None, attempt: int | None = None) -> bool:
    """Whether nothing more is to be done for ``p``: not ours, or finished (``done``), or, asked about one
    ``attempt``, that attempt is not its current one any more (a stale failure or timer)."""
    return p is None or p.done or (attempt is not None and p.attempt != attempt)


def dispatch_subject(target: Target) -> str:
    """Where a dispatch to ``target`` goes: its gpu_host, or the cloud_proxy for its provider."""
    if target.host:
        return subjects.dispatch_host(target.host, target.model)
    return subjects.dispatch_cloud(target.provider or "", target.model)
