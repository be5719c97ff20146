"""The cloud proxy's pure policies with plain data: rate limits, circuit breaker, retries, and the
mapping of provider error answers to typed errors."""

from __future__ import annotations

import json
import random

import pytest

from actors.cloud_proxy.breaker import CircuitBreaker
from actors.cloud_proxy.errors import (
    AuthFailed,
    BadRequest,
    ContentPolicy,
    ContextTooLong,
    RateLimited,
    ServerError,
    Timeout,
    Unavailable,
    classify,
    parse_retry_after,
)
from actors.cloud_proxy.limits import Limit, RateLimiter, TokenBucket
from actors.cloud_proxy.retry import RetryPolicy


# --- rate limits -----------------------------------------------------------------------------------
def test_bucket_allows_the_burst_then_makes_callers_wait_for_the_refill() -> None:
    """rpm 60 with a 1 s burst: one call now, the next waits one second, the third two."""
    limiter = RateLimiter([Limit.of(60, None, burst=1.0)])
    assert limiter.reserve(tokens=10, now=0.0, max_wait=5) == 0.0
    assert limiter.reserve(tokens=10, now=0.0, max_wait=5) == pytest.approx(1.0)
    assert limiter.reserve(tokens=10, now=0.0, max_wait=5) == pytest.approx(2.0)
    assert limiter.reserve(tokens=10, now=3.0, max_wait=5) == pytest.approx(0.0)


def test_whole_minute_burst_by_default() -> None:
    """rpm 600 with the default burst: 600 calls pass at once, the 601st waits 0.1 s."""
    limiter = RateLimiter([Limit.of(600, None)])
    waits = [limiter.reserve(tokens=1, now=0.0, max_wait=1) for _ in range(601)]
    assert waits[:600] == [0.0] * 600 and waits[600] == pytest.approx(0.1)


def test_refusal_past_max_wait_takes_nothing_and_says_when() -> None:
    """A call that cannot pass within max_wait is refused without consuming the budget."""
    limiter = RateLimiter([Limit.of(60, None, burst=1.0)])
    assert limiter.reserve(tokens=1, now=0.0, max_wait=0) == 0.0
    assert limiter.reserve(tokens=1, now=0.0, max_wait=0.5) is None
    assert limiter.earliest(tokens=1, now=0.0) == pytest.approx(1.0)
    assert limiter.reserve(tokens=1, now=1.0, max_wait=0) == 0.0


def test_tokens_per_minute_and_settlement_with_real_usage() -> None:
    """tpm 6000 (100/s, burst 1 s): an estimate of 100 empties it; settling at 40 gives 60 back."""
    limiter = RateLimiter([Limit.of(None, 6000, burst=1.0)])
    assert limiter.reserve(tokens=100, now=0.0, max_wait=0) == 0.0
    assert limiter.reserve(tokens=60, now=0.0, max_wait=0) is None
    limiter.settle(100, 40, now=0.0)
    assert limiter.reserve(tokens=60, now=0.0, max_wait=0) == 0.0
    limiter.settle(60, 160, now=0.0)  # used more than estimated: charged, a debt to wait out
    assert limiter.earliest(tokens=1, now=0.0) == pytest.approx(1.01)


def test_provider_and_model_limits_are_reserved_together() -> None:
    """Both scopes must pass: the stricter decides the wait, and both are charged."""
    shared = Limit.of(600, None)
    limiter_a = RateLimiter([shared, Limit.of(60, None, burst=1.0)])
    limiter_b = RateLimiter([shared])
    assert limiter_a.reserve(tokens=1, now=0, max_wait=0) == 0.0
    assert limiter_a.reserve(tokens=1, now=0, max_wait=2) == pytest.approx(1.0)
    assert shared.requests is not None and shared.requests.level == pytest.approx(598)
    assert limiter_b.reserve(tokens=1, now=0, max_wait=0) == 0.0


def test_request_larger_than_the_bucket_passes_when_it_is_full() -> None:
    """An estimate above the whole capacity is not refused forever."""
    bucket = TokenBucket.per_minute(600, burst=1.0)
    assert bucket.wait_for(5000, 0.0) == 0.0


def test_pause_until_holds_every_call_back() -> None:
    """After a provider's Retry-After, calls wait for it even with budget left."""
    limiter = RateLimiter([Limit.of(1000, None)])
    limiter.pause_until(5.0)
    assert limiter.reserve(tokens=1, now=1.0, max_wait=10) == pytest.approx(4.0)
    assert limiter.reserve(tokens=1, now=1.0, max_wait=1) is None


# --- circuit breaker -------------------------------------------------------------------------------
def test_breaker_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    b = CircuitBreaker(failures=3, period=10)
    assert not b.failure(0) and not b.failure(1)
    b.success(2)
    assert not b.failure(3) and not b.failure(4)
    assert b.failure(5) and b.current(5) == "open"
    assert not b.allow(6) and b.until == 15


def test_breaker_half_open_lets_exactly_one_trial_through() -> None:
    """After the period one call goes; a second waits; the trial's success closes the circuit."""
    b = CircuitBreaker(failures=1, period=10)
    b.failure(0)
    assert not b.allow(9.9)
    assert b.allow(10) and b.current(10) == "half_open"
    assert not b.allow(10.1)
    assert b.success(11) and b.current(11) == "closed" and b.allow(11)


def test_breaker_half_open_failure_opens_again_and_release_frees_the_trial() -> None:
    b = CircuitBreaker(failures=3, period=10)
    for t in range(3):
        b.failure(t)
    assert b.allow(12)
    b.release()  # the trial ended with the caller's own error: no verdict
    assert b.allow(12)
    assert b.failure(13) and not b.allow(14) and b.allow(23)


# --- retries ---------------------------------------------------------------------------------------
def test_only_retryable_errors_are_retried_within_attempts_and_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=8)
    rng = random.Random(1)
    assert policy.next_delay(ServerError("x"), 1, 60, rng) is not None
    assert policy.next_delay(Timeout("x"), 2, 60, rng) is not None
    assert policy.next_delay(ServerError("x"), 3, 60, rng) is None  # attempts used up
    for permanent in (AuthFailed("x"), BadRequest("x"), ContextTooLong("x"), ContentPolicy("x"), Unavailable("x")):
        assert policy.next_delay(permanent, 1, 60, rng) is None
    assert policy.next_delay(RateLimited("x", retry_after_s=30), 1, 10, rng) is None  # past the deadline
    assert policy.next_delay(RateLimited("x", retry_after_s=2), 1, 10, rng) == pytest.approx(2, abs=0.5)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=4)
    rng = random.Random(7)
    samples = {n: [policy.backoff(n, rng) for _ in range(200)] for n in (1, 2, 3, 6)}
    assert max(samples[1]) <= 0.5 and max(samples[2]) <= 1.0 and max(samples[3]) <= 2.0
    assert max(samples[6]) <= 4.0 and max(samples[6]) > 3.0
    assert len({round(x, 6) for x in samples[3]}) > 150  # jittered, not fixed


# --- error mapping ---------------------------------------------------------------------------------
def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("status", "raw", "expected"),
    [
        (401, body({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                              "code": "invalid_api_key"}}), AuthFailed),
        (401, body({"detail": "Invalid API key"}), AuthFailed),  # llama.cpp's server (FastAPI)
        (403, body({"type": "error", "error": {"type": "permission_error", "message": "no"}}), AuthFailed),
        (400, body({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                              "status": "INVALID_ARGUMENT"}}), AuthFailed),
        (429, body({"error": {"message": "Rate limit reached", "type": "requests",
                              "code": "rate_limit_exceeded"}}), RateLimited),
        (429, body({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                              "code": "insufficient_quota"}}), Unavailable),
        (400, body({"error": {"message": "This model's maximum context length is 2048 tokens",
                              "type": "invalid_request_error", "code": "context_length_exceeded"}}), ContextTooLong),
        (413, body({"type": "error", "error": {"type": "request_too_large", "message": "too big"}}), ContextTooLong),
        (400, body({"error": {"message": "Your request was rejected as a result of our safety system",
                              "code": "content_policy_violation"}}), ContentPolicy),
        (400, body({"error": {"message": "Invalid 'messages[0].role'", "type": "invalid_request_error"}}), BadRequest),
        (404, body({"error": {"message": "The model `gpt-9` does not exist"}}), BadRequest),
        (400, body({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                              "message": "Invalid value at 'safety_settings[0].threshold'"}}), BadRequest),
        (500, body({"error": {"message": "The server had an error"}}), ServerError),
        (529, body({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), ServerError),
        (503, b"<html>Service Unavailable</html>", ServerError),
        (504, body({"error": {"code": 504, "status": "DEADLINE_EXCEEDED", "message": "late"}}), Timeout),
        (408, b"", Timeout),
    ],
)  # fmt: skip
def test_http_errors_of_every_format_map_to_their_type(status: int, raw: bytes, expected: type) -> None:
    err = classify(status, raw, {}, now=0.0)
    assert type(err) is expected
    assert err.status == status


def test_retry_after_comes_from_the_header_or_the_body() -> None:
    err = classify(429, body({"error": {"message": "slow"}}), {"Retry-After": "12"}, now=0.0)
    assert isinstance(err, RateLimited) and err.retry_after_s == 12.0
    gemini = body({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                             "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                          "retryDelay": "7.5s"}]}})  # fmt: skip
    assert classify(429, gemini, {}, now=0.0).retry_after_s == 7.5


def test_retry_after_http_date_and_garbage() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon", now=0) is None and parse_retry_after(None, now=0) is None
    assert parse_retry_after("-3", now=0) == 0.0


def test_auth_error_message_never_repeats_the_providers_text() -> None:
    """A provider that echoes the key in its 401 body does not get it into our message."""
    err = classify(401, body({"error": {"message": "Incorrect API key provided: sk-abc123secret"}}), {}, 0.0)
    assert "sk-abc123secret" not in err.message and err.to_info().code == "auth_failed"


def test_error_info_is_scrubbed_and_carries_retryability() -> None:
    err = RateLimited("limit for key sk-secret-value", retry_after_s=3)
    info = err.to_info(lambda text: text.replace("sk-secret-value", "***"))
    assert info.message == "limit for key ***" and info.retryable and info.retry_after_s == 3
    assert not BadRequest("x").to_info().retryable
