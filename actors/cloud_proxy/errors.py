"""Errors of the cloud proxy, and the pure mapping of provider answers onto them.

    CloudError
     ├── ProviderError           one call to a provider failed; ``code`` is a bus ErrorCode
     │    ├── RateLimited        429 / quota (``retry_after_s`` from Retry-After or the body)   rate_limited
     │    ├── AuthFailed         401 / 403: the provider refused our key (never shows the key)  auth_failed
     │    ├── BadRequest         400 / 404 / 422: the request itself is wrong                    bad_request
     │    ├── ContextTooLong     the prompt + max_tokens exceed the model's context             context_too_long
     │    ├── ContentPolicy      refused by the provider's content filter                       content_policy
     │    ├── ServerError        5xx, garbage, a broken connection                              provider_error
     │    ├── Timeout            no answer within the timeout or the request's deadline         timeout
     │    └── Unavailable        no key, provider disabled, circuit open, quota exhausted        unavailable
     └── SecretError             a secret source could not be read (file missing, Vault down)

``classify(status, body, headers)`` turns an HTTP error answer of any of the three wire formats
(OpenAI, Anthropic, Gemini) into a ProviderError. It is pure: ``now`` is passed in for HTTP dates.
Messages are scrubbed of every registered secret (:func:`bus.log.redact`) and only then cut to a few
hundred characters: cutting first would leave a key's prefix at the cut, which no mask recognises.
Only the head of a body is read (:data:`MAX_SCAN`): a provider's error text past that never reaches a
client, and the patterns below then run on bounded text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from bus.log import redact
from schemas.errors import ErrorCode, ErrorInfo

MAX_MESSAGE = 300
MAX_SCAN = 8192  # characters of an error body that are read at all (masked, then cut to MAX_MESSAGE)


class CloudError(Exception):
    pass


class SecretError(CloudError):
    pass


class ProviderError(CloudError):
    code: ClassVar[ErrorCode] = "provider_error"
    retryable: ClassVar[bool] = False  # may the same call to the same deployment succeed if repeated?
    trips_breaker: ClassVar[bool] = False  # does it say something about the deployment's health?

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        message = redact(message[: 4 * MAX_SCAN])[:MAX_MESSAGE]  # mask first, then cut
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    def to_info(self, scrub: Any = None) -> ErrorInfo:
        message = scrub(self.message) if scrub else self.message
        return ErrorInfo.of(self.code, message, retry_after_s=self.retry_after_s)


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True
    trips_breaker = True


class AuthFailed(ProviderError):
    code = "auth_failed"
    trips_breaker = True


class BadRequest(ProviderError):
    code = "bad_request"


class ContextTooLong(ProviderError):
    code = "context_too_long"


class ContentPolicy(ProviderError):
    code = "content_policy"


class ServerError(ProviderError):
    code = "provider_error"
    retryable = True
    trips_breaker = True


class Timeout(ProviderError):
    code = "timeout"
    retryable = True
    trips_breaker = True


class Unavailable(ProviderError):
    code = "unavailable"


_CONTEXT = re.compile(
    r"context[_ ]length|maximum context|context window|prompt is too long|too many tokens|"
    r"input token count .* exceeds|exceeds the maximum number of tokens|reduce the length",
    re.I,
)
_POLICY = re.compile(r"content[_ ](?:policy|filter)|filtering policy|safety system|responsibleai|moderation", re.I)
_AUTH = re.compile(r"api[_ ]key[_ ]invalid|api key not valid|invalid[_ ]api[_ ]key|invalid x-api-key", re.I)
_QUOTA = re.compile(r"insufficient_quota|billing|credit balance", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After: delay-seconds or an HTTP date (RFC 9110 §10.2.3). None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def _error_fields(body: Any) -> tuple[str, str, float | None]:
    """(message, type-or-code text, retry delay) from an OpenAI, Anthropic, Gemini or FastAPI error body."""
    if not isinstance(body, dict):
        return "", "", None
    err = body.get("error", body)
    if isinstance(err, str):
        return err, "", None
    if not isinstance(err, dict):
        return str(body.get("detail", "")), "", None
    message = str(err.get("message") or body.get("detail") or "")[:MAX_SCAN]
    kinds = " ".join(str(err.get(k) or "") for k in ("type", "code", "status"))
    delay = None
    for detail in err.get("details") or []:  # Gemini: google.rpc.RetryInfo / ErrorInfo
        if not isinstance(detail, dict):
            continue
        m = _DURATION.match(str(detail.get("retryDelay", "")))
        if m:
            delay = float(m.group(1))
        kinds += " " + str(detail.get("reason") or "")
    return message, kinds, delay


def parse_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def classify(status: int, raw: bytes, headers: Mapping[str, str], now: float) -> ProviderError:
    """The ProviderError for an HTTP error answer (status >= 400) of any supported wire format."""
    message, kinds, body_delay = _error_fields(parse_body(raw))
    if not message:
        message = raw[:MAX_SCAN].decode("utf-8", "replace").strip() or f"HTTP {status}"
    text = f"{kinds[:MAX_SCAN]} {message}"
    header_delay = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"), now)
    retry_after = header_delay if header_delay is not None else body_delay
    described = f"HTTP {status}: {message}"
    if status == 429 and _QUOTA.search(text):
        return Unavailable(f"quota exhausted: {described}", status=status)
    if status == 429 or "rate_limit" in kinds or "RESOURCE_EXHAUSTED" in kinds:
        return RateLimited(described, status=status, retry_after_s=retry_after)
    if status in (401, 403) or _AUTH.search(text) or "authentication_error" in kinds:
        return AuthFailed(f"HTTP {status}: the provider refused the API key", status=status)
    if status == 408 or status == 504 or "DEADLINE_EXCEEDED" in kinds:
        return Timeout(described, status=status)
    if status >= 500 or "overloaded_error" in kinds or "api_error" in kinds:
        return ServerError(described, status=status, retry_after_s=retry_after)
    if status == 413 or _CONTEXT.search(text):
        return ContextTooLong(described, status=status)
    if _POLICY.search(text):
        return ContentPolicy(described, status=status)
    return BadRequest(described, status=status)
