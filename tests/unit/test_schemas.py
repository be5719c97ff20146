"""Message schemas: valid requests decode; invalid ones are refused naming the field."""

from __future__ import annotations

import msgspec
import pytest

from schemas.codec import COMMAND, EVENT, OUTCOME, REQUEST, encode
from schemas.commands import LoadModel, SetTier
from schemas.errors import ErrorInfo, SchemaError
from schemas.events import ModelLoaded, event_kind
from schemas.request import MAX_PROMPT_CHARS, ChatMessage, GenerateRequest, make_request
from schemas.result import GenerateError, GenerateResult


def test_a_minimal_chat_request_decodes_with_defaults() -> None:
    """Only id and messages are required; sampling, mode and priority get sane defaults."""
    req = REQUEST.decode(b'{"id":"r1","messages":[{"role":"user","content":"hi"}]}')
    assert req.sampling.max_tokens == 256 and req.mode == "single" and req.priority == "normal"
    assert req.effective_deadline > req.created_at


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        (b'{"id":"r","prompt":"x","sampling":{"max_tokens":-1}}', "sampling.max_tokens", ">= 1"),
        (b'{"id":"r","prompt":"x","sampling":{"temperature":3}}', "sampling.temperature", "<= 2.0"),
        (b'{"id":"r","prompt":"x","sampling":{"top_p":0}}', "sampling.top_p", "> 0.0"),
        (b'{"id":"r","messages":[]}', "messages", "must not be empty"),
        (b'{"id":"r"}', "messages", "exactly one of"),
        (b'{"id":"r","prompt":"x","messages":[{"role":"user","content":"y"}]}', "messages", "exactly one of"),
        (b'{"id":"bad id","prompt":"x"}', "id", "regex"),
        (b'{"id":"r","messages":[{"role":"robot","content":"y"}]}', "messages[0].role", "Invalid enum value"),
        (b'{"id":"r","prompt":5}', "prompt", "Expected `str | null`"),
        (b'{"id":"r","prompt":"x","mode":"ensemble","stream":true}', "stream", "not available"),
    ],
)
def test_invalid_requests_name_the_wrong_field(payload: bytes, field: str, fragment: str) -> None:
    """Each invalid request raises SchemaError with the dotted path of the offending field."""
    with pytest.raises(SchemaError) as err:
        REQUEST.decode(payload)
    assert err.value.field == field
    assert fragment in str(err.value)
    assert err.value.to_info().code == "bad_request"


def test_undecodable_bytes_are_a_schema_error_without_field() -> None:
    """Bytes that are not JSON at all are a SchemaError too (no field to name)."""
    with pytest.raises(SchemaError) as err:
        REQUEST.decode(b"\xff\xfe garbage")
    assert err.value.field is None and "malformed" in str(err.value)


def test_an_oversized_prompt_is_refused() -> None:
    """A prompt past MAX_PROMPT_CHARS is refused at the door, naming the field."""
    big = encode({"id": "r", "messages": [{"role": "user", "content": "a" * (MAX_PROMPT_CHARS // 2 + 1)}] * 2})
    with pytest.raises(SchemaError) as err:
        REQUEST.decode(big)
    assert err.value.field == "messages" and "exceeds" in str(err.value)


def test_requests_round_trip_through_the_codec() -> None:
    """make_request fills id, created_at and deadline; encode/decode is lossless."""
    req = make_request(messages=[ChatMessage(role="user", content="hello")], model="smollm2-135m", timeout_s=5)
    assert len(req.id) == 32 and 4.9 < req.deadline - req.created_at < 5.1
    assert REQUEST.decode(encode(req)) == req


def test_outcome_union_decodes_results_and_errors_by_kind() -> None:
    """orch.result.<id> carries a tagged union: a result or a typed error."""
    ok = GenerateResult(request_id="r", text="t", model="m", family="f", tier="local", target="cpu0")
    bad = GenerateError(request_id="r", error=ErrorInfo.of("timeout", "late"))
    assert OUTCOME.decode(encode(ok)) == ok
    decoded = OUTCOME.decode(encode(bad))
    assert isinstance(decoded, GenerateError) and decoded.error.retryable


def test_events_and_commands_are_tagged_unions() -> None:
    """Events and commands decode to their own class by ``kind``; unknown fields are ignored."""
    ev = ModelLoaded(host="cpu0", model="m", load_ms=12.5)
    assert event_kind(ev) == "model.loaded"
    raw = msgspec.json.decode(encode(ev))
    raw["future_field"] = 1  # schema evolution: a newer producer
    assert EVENT.decode(encode(raw)) == ev
    assert isinstance(COMMAND.decode(encode(LoadModel(host="h", model="m"))), LoadModel)
    assert isinstance(COMMAND.decode(encode(SetTier(tier="premium", enabled=False))), SetTier)


def test_request_struct_is_frozen() -> None:
    """Messages are immutable once built."""
    req = GenerateRequest(id="r", prompt="x")
    with pytest.raises(AttributeError):
        req.prompt = "y"  # type: ignore[misc]
