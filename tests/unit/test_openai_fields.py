"""Nothing silently dropped: every field of the OpenAI chat and completions requests is honoured or refused
with a 400 naming it, unknown fields are refused, and docs/openai-compat.md lists every declared field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.gateway import openai_api as oa
from actors.gateway import requests as rq
from schemas.errors import SchemaError

DOC = (Path(__file__).resolve().parents[2] / "docs" / "openai-compat.md").read_text()
CHAT_DOC, COMPLETION_DOC = DOC.split("## POST /v1/completions")


def _chat(**kw: Any) -> bytes:
    return msgspec.json.encode({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **kw})


def _completion(**kw: Any) -> bytes:
    return msgspec.json.encode({"model": "auto", "prompt": "hi", **kw})


def _refusal(raw: bytes, *, chat: bool) -> SchemaError:
    with pytest.raises(SchemaError) as err:
        oa.to_request(rq.decode(raw, chat=chat), client_key=None, default_timeout=30)
    return err.value


def test_the_doc_lists_every_declared_field() -> None:
    """A field added to the request structs without its line in docs/openai-compat.md fails here."""
    for name in rq.ChatRequest.__struct_fields__:
        assert f"`{name}`" in CHAT_DOC, name
    for name in rq.OAMessage.__struct_fields__:
        assert name in ("role", "content") or f"`messages[].{name}`" in CHAT_DOC, name
    for name in rq.CompletionRequest.__struct_fields__:
        assert f"`{name}`" in COMPLETION_DOC, name


CHAT_REFUSED = [
    ("logit_bias", {"50256": -100}),
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
    ("store", True),
    ("tool_choice", "get_weather"),
    ("audio", {"voice": "alloy"}),
    ("prediction", {"type": "content", "content": "x"}),
    ("reasoning_effort", "high"),
    ("verbosity", "low"),
    ("web_search_options", {"search_context_size": "low"}),
    ("modalities", ["text", "audio"]),
    ("service_tier", "flex"),
]


@pytest.mark.parametrize(("field", "value"), CHAT_REFUSED)
def test_an_unsupported_chat_field_is_a_400_naming_it(field: str, value: Any) -> None:
    assert _refusal(_chat(**{field: value}), chat=True).field == field


@pytest.mark.parametrize(
    ("field", "value"), [("logit_bias", {"1": 1}), ("echo", True), ("suffix", "x"), ("best_of", 3)]
)
def test_an_unsupported_completion_field_is_a_400_naming_it(field: str, value: Any) -> None:
    assert _refusal(_completion(**{field: value}), chat=False).field == field


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "user", "content": "x", "name": "bob"}, "messages[0].name"),
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}, "messages[0].tool_calls[0]"),
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
        ({"role": "function", "content": "x", "name": "f"}, "messages[0].role"),
        ({"role": "user", "content": "x", "colour": "red"}, "messages[0].colour"),
    ],
)
def test_message_fields_are_honoured_or_refused_by_name(message: dict[str, Any], field: str) -> None:
    assert _refusal(_chat(messages=[message]), chat=True).field == field


def test_an_unknown_field_is_a_400_naming_it() -> None:
    """A typo (`temprature`) is refused, not ignored."""
    assert _refusal(_chat(temprature=0.2), chat=True).field == "temprature"
    assert _refusal(_chat(stream_options={"include_usage": True, "x": 1}), chat=True).field == "stream_options.x"


def test_neutral_values_of_unsupported_fields_pass() -> None:
    """What SDKs and frameworks send by default (null, false, empty, `none`, `text`) is fine."""
    body = rq.decode(
        _chat(
            tools=[],
            tool_choice="none",
            logprobs=False,
            store=False,
            response_format={"type": "text"},
            modalities=["text"],
            service_tier="auto",
            logit_bias={},
            n=None,
            stream=None,
        ),
        chat=True,
    )
    assert oa.to_request(body, client_key=None, default_timeout=30).mode == "single"


def test_recorded_fields_become_tags() -> None:
    """user, safety_identifier, prompt_cache_key and metadata are recorded on the request."""
    body = rq.decode(_chat(user="u1", safety_identifier="s1", prompt_cache_key="k1", metadata={"run": "7"}), chat=True)
    tags = oa.to_request(body, client_key=None, default_timeout=30).tags
    assert tags == {"user": "u1", "safety_identifier": "s1", "prompt_cache_key": "k1", "metadata.run": "7"}
    too_many = _chat(metadata={str(i): "v" for i in range(17)})
    assert _refusal(too_many, chat=True).field == "metadata"


def test_an_assistant_refusal_in_the_history_is_its_text() -> None:
    body = rq.decode(
        _chat(
            messages=[{"role": "assistant", "content": None, "refusal": "I can't"}, {"role": "user", "content": "ok"}]
        ),
        chat=True,
    )
    gen = oa.to_request(body, client_key=None, default_timeout=30)
    assert gen.messages is not None and gen.messages[0].content == "I can't"


def test_response_format_maps_to_sampling_with_a_canonical_schema() -> None:
    """json_object and json_schema travel in sampling (so in every cache key); equal schemas written in
    another key order give the same request; a type the API does not have is a 400."""
    mode = oa.to_request(
        rq.decode(_chat(response_format={"type": "json_object"}), chat=True), client_key=None, default_timeout=30
    )
    assert mode.sampling.response_format is not None and mode.sampling.response_format.type == "json_object"
    a = {"type": "json_schema", "json_schema": {"name": "c", "schema": {"type": "object", "required": ["x"]}}}
    b = {"type": "json_schema", "json_schema": {"schema": {"required": ["x"], "type": "object"}, "name": "c"}}
    ra, rb = (
        oa.to_request(rq.decode(_chat(response_format=f), chat=True), client_key=None, default_timeout=30)
        for f in (a, b)
    )
    assert (
        ra.sampling == rb.sampling and ra.sampling.response_format.json_schema == '{"required":["x"],"type":"object"}'
    )  # type: ignore[union-attr]
    assert _refusal(_chat(response_format={"type": "xml"}), chat=True).field == "response_format.type"
    assert _refusal(_chat(response_format={"type": "json_schema"}), chat=True).field == "response_format.json_schema"


def test_n_and_logprobs_map_to_sampling_and_are_not_streamed() -> None:
    """n > 1 on one model and logprobs / top_logprobs are honoured; neither is streamed (400 naming it)."""
    gen = oa.to_request(
        rq.decode(_chat(n=3, logprobs=True, top_logprobs=2), chat=True), client_key=None, default_timeout=30
    )
    assert gen.mode == "single" and gen.sampling.n == 3 and gen.sampling.logprobs and gen.sampling.top_logprobs == 2
    legacy = oa.to_request(rq.decode(_completion(logprobs=2), chat=False), client_key=None, default_timeout=30)
    assert legacy.sampling.logprobs and legacy.sampling.top_logprobs == 2
    assert _refusal(_chat(n=2, stream=True), chat=True).field == "n"
    assert _refusal(_chat(logprobs=True, stream=True), chat=True).field == "logprobs"
    assert _refusal(_chat(top_logprobs=21), chat=True).field == "top_logprobs"


def test_tools_are_mapped_and_bounded() -> None:
    """tools and a named tool_choice travel in sampling; a tool_choice naming no tool and oversized schemas
    are refused by name (a grammar is built from them on the worker)."""
    fn = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    gen = oa.to_request(
        rq.decode(_chat(tools=[fn], tool_choice={"type": "function", "function": {"name": "f"}}), chat=True),
        client_key=None,
        default_timeout=30,
    )
    assert [t.name for t in gen.sampling.tools] == ["f"] and gen.sampling.tool_choice == "f"
    assert _refusal(_chat(tools=[fn], tool_choice="g"), chat=True).field == "tool_choice"
    big = {"type": "function", "function": {"name": "f", "description": "x" * 70_000}}
    assert _refusal(_chat(tools=[big]), chat=True).field == "tools"
