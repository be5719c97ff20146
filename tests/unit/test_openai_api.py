"""The OpenAI wire format as pure functions: request mapping, responses, SSE events, errors."""

from __future__ import annotations

import msgspec
import pytest

from actors.gateway import openai_api as oa
from actors.router.queues import backlog_targets
from schemas.errors import ErrorInfo, SchemaError
from schemas.result import GenerateResult, Provenance, Response, StreamChunk, Usage


def chat_body(**kw: object) -> oa.ChatRequest:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **kw}
    return oa.CHAT.decode(msgspec.json.encode(body))


def test_chat_maps_to_a_generate_request_with_openai_defaults() -> None:
    gen = oa.to_request(chat_body(), client_key="alice", default_timeout=30)
    assert gen.model is None and gen.mode == "single" and gen.client_key == "alice"
    assert gen.sampling.temperature == 1.0 and gen.sampling.max_tokens == oa.DEFAULT_CHAT_MAX_TOKENS
    assert 29 < gen.deadline - gen.created_at < 31


def test_content_parts_developer_role_stop_and_extensions_are_understood() -> None:
    body = chat_body(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
        stop="END",
        max_completion_tokens=7,
        orchestra={"strategy": "quality", "tiers": ["local"], "no_cache": True, "task": "t1", "timeout_s": 5},
    )
    gen = oa.to_request(body, client_key=None, default_timeout=30)
    assert [m.role for m in gen.messages or []] == ["system", "user"] and gen.messages[1].content == "ab"  # type: ignore[index]
    assert gen.sampling.stop == ["END"] and gen.sampling.max_tokens == 7
    assert gen.requirements.strategy == "quality" and gen.cache.no_cache and gen.task == "t1"


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 17}, "n"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"orchestra": {"fanout": 0}}, "orchestra.fanout"),
    ],
)
def test_invalid_parameters_are_reported_by_their_openai_name(kw: dict[str, object], param: str) -> None:
    with pytest.raises(SchemaError) as err:
        oa.to_request(chat_body(**kw), client_key=None, default_timeout=30)
    assert err.value.field == param


def test_virtual_models_choose_the_mode_and_n_sets_the_fanout() -> None:
    gen = oa.to_request(chat_body(model="diverse", n=6), client_key=None, default_timeout=30)
    assert gen.mode == "diverse" and gen.requirements.fanout == 6
    with pytest.raises(SchemaError):
        oa.to_request(chat_body(model="ensemble", stream=True), client_key=None, default_timeout=30)


def test_completion_defaults_to_16_tokens_and_one_prompt() -> None:
    body = oa.COMPLETION.decode(b'{"model":"gemma3-270m","prompt":["Once"]}')
    gen = oa.to_request(body, client_key=None, default_timeout=30)
    assert gen.prompt == "Once" and gen.sampling.max_tokens == 16
    with pytest.raises(SchemaError) as err:
        oa.to_request(oa.COMPLETION.decode(b'{"model":"x","prompt":["a","b"]}'), client_key=None, default_timeout=30)
    assert err.value.field == "prompt"


RESULT = GenerateResult(
    request_id="r1",
    text="hello",
    model="smollm2-135m",
    family="smollm",
    tier="local",
    target="cpu0",
    usage=Usage(input_tokens=3, output_tokens=2),
)


def test_responses_have_the_shape_the_sdk_expects() -> None:
    chat = oa.chat_response(RESULT)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"] == "hello"
    assert chat["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert chat["orchestra"]["target"] == "cpu0"
    comp = oa.completion_response(RESULT)
    assert comp["object"] == "text_completion" and comp["choices"][0]["text"] == "hello"


def test_a_diverse_result_becomes_one_choice_per_answer() -> None:
    prov = Provenance(model="m", family="f", tier="local", target="cpu0")
    r = msgspec.structs.replace(
        RESULT, responses=[Response(request_id=f"r1-{i}", text=f"a{i}", provenance=prov) for i in range(3)]
    )
    assert [c["message"]["content"] for c in oa.chat_response(r)["choices"]] == ["a0", "a1", "a2"]


def test_each_choice_carries_its_provenance() -> None:
    """A fan-out's choices say which model, family, temperature and prompt variant made them."""
    answers = [
        Response(
            request_id=f"r1-{i}",
            text=f"a{i}",
            provenance=Provenance(
                model=m, family=f, tier="local", target="cpu0", temperature=t, top_p=1.0, prompt_variant=v
            ),
        )
        for i, (m, f, t, v) in enumerate(
            [("smollm2-135m", "smollm", 0.2, "direct"), ("gemma3-270m", "gemma", 0.8, "plan-first")]
        )
    ]
    r = msgspec.structs.replace(RESULT, responses=answers)
    for shape in (oa.chat_response(r), oa.completion_response(r)):
        got = [c["orchestra"] for c in shape["choices"]]
        assert [(p["model"], p["family"], p["temperature"], p["prompt_variant"]) for p in got] == [
            ("smollm2-135m", "smollm", 0.2, "direct"),
            ("gemma3-270m", "gemma", 0.8, "plan-first"),
        ]
        assert [p["request_id"] for p in got] == ["r1-0", "r1-1"]
    single = oa.chat_response(RESULT)["choices"][0]["orchestra"]
    assert (single["model"], single["family"], single["target"]) == ("smollm2-135m", "smollm", "cpu0")


def test_stream_events_end_with_usage_and_done() -> None:
    gen = oa.to_request(chat_body(stream=True), client_key=None, default_timeout=30)
    shaper = oa.StreamShaper(gen, chat=True, include_usage=True)
    first = shaper.chunk(StreamChunk(request_id="r1", index=0, text="hel"))
    events = [e for e in first.split(b"\n\n") if e]
    assert b'"role":"assistant"' in events[0] and b'"content":"hel"' in events[1]
    tail = shaper.finish(RESULT, streamed_text=True)
    parts = [e for e in tail.split(b"\n\n") if e]
    assert b'"finish_reason":"stop"' in parts[0]
    assert b'"choices":[]' in parts[1] and b'"total_tokens":5' in parts[1]
    assert parts[-1] == b"data: [DONE]"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("bad_request", 400),
        ("unauthorized", 401),
        ("not_found", 404),
        ("rate_limited", 429),
        ("budget_exceeded", 429),
        ("timeout", 504),
        ("unavailable", 503),
        ("provider_error", 502),
        ("internal", 500),
    ],
)
def test_typed_errors_map_to_openai_statuses(code: str, status: int) -> None:
    got, body = oa.error_body(ErrorInfo.of(code, "m", field="sampling.temperature"))  # type: ignore[arg-type]
    assert got == status and body["error"]["message"] == "m" and body["error"]["param"] == "temperature"


def test_backlog_needs_a_sustained_depth_and_clears_below_half() -> None:
    over: dict[str, float] = {}
    assert backlog_targets({"a": 60}, over, now=0, threshold=50, wait=10) == set()
    assert backlog_targets({"a": 60}, over, now=11, threshold=50, wait=10) == {"a"}
    assert backlog_targets({"a": 40}, over, now=12, threshold=50, wait=10) == {"a"}  # hysteresis
    assert backlog_targets({"a": 20}, over, now=13, threshold=50, wait=10) == set()
