"""Shared building blocks: the Struct bases, constrained aliases and small enums."""

from __future__ import annotations

import time
import typing
import uuid
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# Subject-safe identifiers: they become NATS subject tokens (``orch.result.<id>``).
RequestId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64)]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")]

Tier = Literal["local", "together", "premium"]
TIERS: tuple[Tier, ...] = ("local", "together", "premium")
Priority = Literal["high", "normal", "low", "batch"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low", "batch")


def priority_rank(priority: str) -> int:
    """Where a request of this priority stands in a queue of waiting work: 0 first (high), then normal,
    low, batch; an unknown token after all of them."""
    return PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)


RouteMode = Literal["single", "diverse", "ensemble"]
Strategy = Literal["auto", "cost", "speed", "quality", "specialisation", "least_loaded", "round_robin"]
Capability = Literal[
    "general",
    "code-generation",
    "reasoning",
    "long-context",
    "test-generation",
    "fast-inference",
    "math",
    "analysis",
    "bug-detection",
    "structured-output",
    "conversational",
    "creative",
]
KeepAlive = Literal["hot", "warm", "cold"]
Severity = Literal["critical", "high", "medium", "low"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every bus message: immutable, keyword-only; unknown fields are ignored (evolution)."""


class Tagged(Message, frozen=True, kw_only=True, tag_field="kind"):
    """Base of the members of a tagged union: the ``kind`` field names the variant."""


def now() -> float:
    """Wall-clock time in seconds since the epoch (what every timestamp on the bus uses)."""
    return time.time()


def new_id() -> str:
    """A fresh request id: 32 hex characters, subject-safe."""
    return uuid.uuid4().hex


CAPABILITIES: tuple[str, ...] = typing.get_args(Capability)
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)


class ToolCall(Message, frozen=True, kw_only=True):
    """A function call a model made (OpenAI's ``tool_calls`` entry): ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str = "{}"
