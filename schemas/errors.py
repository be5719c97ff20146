"""Typed errors that travel on the bus, and the schema error raised for invalid input.

    SchemaError (ValueError)        bytes that do not decode into the expected message
    ErrorInfo                       the error record carried by GenerateError / AttemptFailed / replies

Error codes are a closed set so that every consumer (gateway, CLI, router) can map them: the gateway
turns them into OpenAI-shaped HTTP errors, the router decides from them whether to fall back.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.base import Message

ErrorCode = Literal[
    "bad_request",  # the request itself is wrong (a field names what)
    "unauthorized",  # missing or invalid client key
    "forbidden",  # the key may not use this model or tier
    "not_found",  # unknown model or route
    "rate_limited",  # a provider or key limit; retry_after_s says when
    "budget_exceeded",  # a hard budget denied the reservation
    "context_too_long",  # prompt + max_tokens exceed the model's context
    "content_policy",  # refused by a provider's content filter
    "timeout",  # the deadline passed
    "unavailable",  # no candidate can serve it now (tier disabled, host down, cooldown)
    "overloaded",  # queues full
    "oom",  # out of memory on the card
    "provider_error",  # a provider answered 5xx or garbage
    "auth_failed",  # the provider refused our credentials (never shows the key)
    "cancelled",  # the caller went away
    "internal",  # a bug; logged with details where it happened
]

# Codes for which trying the same target again may succeed.
RETRYABLE: frozenset[str] = frozenset({"rate_limited", "timeout", "unavailable", "overloaded", "provider_error"})
# Codes that another target may not suffer from (the router falls back on these).
FALLBACK_ON: frozenset[str] = frozenset(
    {
        "rate_limited",
        "timeout",
        "unavailable",
        "overloaded",
        "oom",
        "provider_error",
        "auth_failed",
        "budget_exceeded",
        "context_too_long",
        "internal",
    }
)


class ErrorInfo(Message, frozen=True, kw_only=True):
    code: ErrorCode
    message: str
    retryable: bool = False
    field: str | None = None  # for bad_request: the dotted path of the offending field
    retry_after_s: float | None = None

    @classmethod
    def of(cls, code: ErrorCode, message: str, **kw: object) -> ErrorInfo:
        return cls(code=code, message=message, retryable=code in RETRYABLE, **kw)  # type: ignore[arg-type]


class SchemaError(ValueError):
    """Input that does not decode into the expected message. ``field`` is a dotted path or None."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.reason = message
        self.field = field

    @classmethod
    def from_msgspec(cls, exc: msgspec.DecodeError | ValueError) -> SchemaError:
        """Turn msgspec's "Expected ... - at `$.a.b[0]`" into a message plus a dotted field path."""
        text = str(exc)
        at = text.rfind(" - at `$")
        if at < 0 or not text.endswith("`") or "`" in text[at + 8 : -1]:
            return cls(text)
        field = text[at + 8 : -1].lstrip(".")
        return cls(text[:at], field or None)

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(code="bad_request", message=str(self), field=self.field)
