"""Commands: requests for an outcome, on ``orch.cmd.<target>...`` (stream COMMANDS), one tagged union.

Commands ask for an outcome (``load`` means "make sure it is loaded"); the owner of the state decides
how, and publishes events for what it did. Each carries ``by`` (who asked) and ``reason``.
"""

from __future__ import annotations

from typing import Literal

from schemas.base import Tagged, Tier


class Command(Tagged, frozen=True, kw_only=True):
    at: float = 0.0
    by: str = ""
    reason: str = ""
    command_id: str = ""


class LoadModel(Command, frozen=True, kw_only=True, tag="host.load"):
    host: str
    model: str
    instances: int = 1  # ensure at least this many instances are loaded
    keep_alive: str | None = None  # hot / warm / cold override
    max_bits: float | None = None  # load no variant more precise than this (a lower-bit reload after an OOM)


class UnloadModel(Command, frozen=True, kw_only=True, tag="host.unload"):
    host: str
    model: str
    instances: int | None = None  # None: all instances


class SwapModels(Command, frozen=True, kw_only=True, tag="host.swap"):
    host: str
    unload: list[str] = []
    load: list[str] = []


class SetTier(Command, frozen=True, kw_only=True, tag="tier.set"):
    tier: Tier
    enabled: bool
    until: float | None = None  # disabled until then (re-enabled by schedule)


class SetPhase(Command, frozen=True, kw_only=True, tag="phase.set"):
    phase: str


class Rotate(Command, frozen=True, kw_only=True, tag="phase.rotate"):
    """Rotate now (``orchestra rotate now``): the rotator chooses the next rotation models of the current
    phase at once instead of at its next scheduled time; ``phase`` (optional) must be the current phase."""

    phase: str | None = None


class SetOverflow(Command, frozen=True, kw_only=True, tag="router.overflow"):
    model: str | None = None  # None: all local models
    enabled: bool = True
    tier: Tier = "together"


class AckAlert(Command, frozen=True, kw_only=True, tag="alert.ack"):
    alert_id: str


class DecideReview(Command, frozen=True, kw_only=True, tag="review.decide"):
    """An operator's decision on an escalated request (``orchestra review accept|reject``); only the
    operator may publish it. ``answer``: the index of the chosen answer; ``text``: a written answer
    (a rejection may give one instead of choosing)."""

    request_id: str
    verdict: Literal["accept", "reject"]
    answer: int | None = None
    text: str | None = None


AnyCommand = LoadModel | UnloadModel | SwapModels | SetTier | SetPhase | Rotate | SetOverflow | AckAlert | DecideReview
