"""Function calls streamed as OpenAI-style deltas (pure): a local model's constrained output, each
provider's stream events, and the gateway's SSE entries; cloud embeddings' wire bodies."""

from __future__ import annotations

import json

import pytest

from actors.cloud_proxy.clients.anthropic import AnthropicStream
from actors.cloud_proxy.clients.embeddings import embed_body, embed_url, parse_embeddings
from actors.cloud_proxy.clients.gemini import GeminiStream
from actors.cloud_proxy.clients.openai import OpenAIStream
from actors.cloud_proxy.clients.sse import SseEvent
from actors.cloud_proxy.errors import ServerError, Unavailable
from actors.gateway.responses import call_delta
from actors.gpu_host.callstream import CallStream
from schemas.request import Sampling, Tool
from schemas.result import ToolCallDelta

TOOLS = Sampling(tools=[Tool(name="get_weather", parameters='{"type": "object"}')], tool_choice="required")
AUTO = Sampling(tools=[Tool(name="get_weather", parameters='{"type": "object"}')], tool_choice="auto")
CALL = '{"name": "get_weather", "arguments": {"city": "Oslo }", "days": {"n": 3}}} \n'


def _run(cs: CallStream, text: str, step: int) -> list[str | ToolCallDelta]:
    out: list[str | ToolCallDelta] = []
    for i in range(0, len(text), step):
        out += cs.feed(text[i : i + step])
    return out + cs.close()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 200])
def test_a_local_call_streams_its_head_first_then_argument_fragments(step: int) -> None:
    """Whatever the piece boundaries: one head delta (id, name, empty arguments), then fragments whose
    concatenation is exactly the arguments object (the call's own closing brace held back)."""
    cs = CallStream(TOOLS, "call_x")
    out = _run(cs, CALL, step)
    assert all(isinstance(d, ToolCallDelta) for d in out)
    head, *rest = out
    assert head == ToolCallDelta(index=0, id="call_x", name="get_weather", arguments="")
    assert all(d.id is None and d.name is None and d.arguments for d in rest)  # type: ignore[union-attr]
    joined = "".join(d.arguments for d in rest)  # type: ignore[union-attr]
    assert json.loads(joined) == {"city": "Oslo }", "days": {"n": 3}} and joined == cs.arguments


def test_auto_text_passes_through_and_without_tools_nothing_changes() -> None:
    cs = CallStream(AUTO, "c")
    assert _run(cs, "  Hello there", 3) == ["  H", "ell", "o t", "her", "e"] and not cs.calling
    plain = CallStream(Sampling(), "c")
    assert plain.feed("{not a call") == ["{not a call"]


def test_a_cut_call_keeps_what_it_streamed() -> None:
    """max_tokens cut the call: the client has the head and the fragments so far (finish 'length')."""
    cs = CallStream(TOOLS, "c")
    out = _run(cs, '{"name": "get_weather", "arguments": {"ci', 4)
    assert out[0].name == "get_weather" and "".join(d.arguments for d in out) == '{"ci'  # type: ignore[union-attr]


def test_gateway_entries_follow_openai() -> None:
    assert call_delta(ToolCallDelta(index=1, id="call_1", name="f", arguments="")) == {
        "index": 1, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}  # fmt: skip
    assert call_delta(ToolCallDelta(index=1, arguments='{"a"')) == {"index": 1, "function": {"arguments": '{"a"'}}


def _feed(parser: OpenAIStream | AnthropicStream | GeminiStream, events: list[tuple[str, object]]) -> list[object]:
    out: list[object] = []
    for name, data in events:
        text = parser.feed(SseEvent(name, data if isinstance(data, str) else json.dumps(data)))
        out += [text] if text else []
        out += parser.take_calls()
    return out


def test_openai_stream_deltas_pass_through_and_end_as_tool_calls() -> None:
    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    first = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    parser = OpenAIStream()
    out = _feed(parser, [
        ("message", chunk({"role": "assistant", "tool_calls": [first]})),
        ("message", chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})),
        ("message", chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Oslo"}'}}]})),
        ("message", chunk({}, "tool_calls")),
        ("message", "[DONE]"),
    ])  # fmt: skip
    assert out[0] == ToolCallDelta(index=0, id="call_9", name="get_weather", arguments="")
    assert [d.arguments for d in out[1:]] == ['{"city":', ' "Oslo"}']  # type: ignore[attr-defined]
    done = parser.result()
    assert done.finish_reason == "tool_calls" and json.loads(done.tool_calls[0].arguments) == {"city": "Oslo"}


def test_anthropic_tool_use_blocks_become_deltas() -> None:
    parser = AnthropicStream()
    block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    out = _feed(parser, [
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": block}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"city": "Os'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": 'lo"}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
        ("message_stop", {"type": "message_stop"}),
    ])  # fmt: skip
    assert out == [
        ToolCallDelta(index=0, id="toolu_1", name="get_weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city": "Os'),
        ToolCallDelta(index=0, arguments='lo"}'),
    ]
    done = parser.result()
    assert done.finish_reason == "tool_calls" and done.tool_calls[0].id == "toolu_1"


def test_gemini_function_call_comes_whole_in_one_delta() -> None:
    parser = GeminiStream()
    part = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    out = _feed(parser, [("message", {"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]})])
    (delta,) = out
    assert isinstance(delta, ToolCallDelta) and delta.name == "get_weather" and delta.id
    assert json.loads(delta.arguments) == {"city": "Oslo"} and parser.result().finish_reason == "tool_calls"


def test_embedding_wire_formats() -> None:
    assert embed_url("openai", "http://x/v1", "te-3") == "http://x/v1/embeddings"
    assert (
        embed_url("gemini", "http://g", "text-embedding-004")
        == "http://g/v1beta/models/text-embedding-004:batchEmbedContents"
    )
    assert embed_body("openai", "te-3", ["a"], 8) == {
        "model": "te-3",
        "input": ["a"],
        "encoding_format": "float",
        "dimensions": 8,
    }
    body = embed_body("gemini", "e", ["a", "b"], None)
    assert body["requests"][1] == {"model": "models/e", "content": {"parts": [{"text": "b"}]}}
    with pytest.raises(Unavailable):
        embed_url("anthropic", "http://a", "x")
    data = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
        "usage": {"prompt_tokens": 4},
    }
    assert parse_embeddings("openai", data, 2) == ([[1.0, 0.0], [0.0, 1.0]], 4)
    assert parse_embeddings("gemini", {"embeddings": [{"values": [0.5]}]}, 1) == ([[0.5]], None)
    with pytest.raises(ServerError):
        parse_embeddings("openai", {"data": [{"index": 0, "embedding": ["x"]}]}, 1)
