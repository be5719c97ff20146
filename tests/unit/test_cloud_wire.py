"""The three wire formats as pure functions: request bodies, answers, SSE streams and usage."""

from __future__ import annotations

import json

import pytest

from actors.cloud_proxy.clients import Call, Completion
from actors.cloud_proxy.clients.anthropic import AnthropicWire
from actors.cloud_proxy.clients.gemini import GeminiWire
from actors.cloud_proxy.clients.openai import OpenAIWire
from actors.cloud_proxy.clients.sse import SseDecoder, SseEvent
from actors.cloud_proxy.errors import (
    AuthFailed,
    ContentPolicy,
    ContextTooLong,
    RateLimited,
    ServerError,
    Unavailable,
)
from policy.pricing import estimate_tokens
from schemas.request import ChatMessage, ResponseFormat, Sampling

CHAT = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Hi"),
    ChatMessage(role="assistant", content="Hello"),
    ChatMessage(role="user", content="Again"),
]
SAMPLING = Sampling(temperature=1.5, top_p=0.9, max_tokens=32, stop=["\n\n"], seed=3)


def events(raw: bytes, *, split: int | None = None) -> list[SseEvent]:
    decoder = SseDecoder()
    if split is None:
        return decoder.feed(raw) + decoder.close()
    out: list[SseEvent] = []
    for i in range(0, len(raw), split):
        out += decoder.feed(raw[i : i + split])
    return out + decoder.close()


# --- SSE -------------------------------------------------------------------------------------------
def test_sse_decoder_handles_any_chunking_line_endings_comments_and_utf8() -> None:
    raw = ": keep-alive\r\nevent: message_start\r\ndata: {\"a\": \"é✓\"}\r\n\r\ndata: one\ndata: two\n\n" \
          "data: last\r\r".encode()  # fmt: skip
    whole = events(raw)
    assert whole == [SseEvent("message_start", '{"a": "é✓"}'), SseEvent("message", "one\ntwo"),
                     SseEvent("message", "last")]  # fmt: skip
    for split in (1, 2, 3, 7):
        assert events(raw, split=split) == whole


def test_sse_decoder_flushes_an_unterminated_last_event() -> None:
    assert events(b"data: [DONE]") == [SseEvent("message", "[DONE]")]


# --- OpenAI ----------------------------------------------------------------------------------------
def test_openai_chat_and_completions_bodies() -> None:
    wire = OpenAIWire()
    chat = Call(model="gpt-4o", sampling=SAMPLING, messages=CHAT, stream=True)
    assert wire.url("https://api.openai.com/v1", chat) == "https://api.openai.com/v1/chat/completions"
    body = wire.body(chat)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."} and len(body["messages"]) == 4
    assert body["max_tokens"] == 32 and body["temperature"] == 1.5 and body["top_p"] == 0.9
    assert body["stop"] == ["\n\n"] and body["seed"] == 3
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    plain = Call(model="m", sampling=Sampling(), prompt="Once")
    assert wire.url("http://h/v1", plain) == "http://h/v1/completions"
    assert wire.body(plain)["prompt"] == "Once" and "stream" not in wire.body(plain)
    assert wire.headers("k") == {"Authorization": "Bearer k"}


def test_openai_answer_and_stream_with_usage_in_the_final_event() -> None:
    wire = OpenAIWire()
    done = wire.parse({"choices": [{"message": {"content": "Hi"}, "finish_reason": "length"}],
                       "usage": {"prompt_tokens": 9, "completion_tokens": 2}})  # fmt: skip
    assert (done.text, done.finish_reason, done.input_tokens, done.output_tokens) == ("Hi", "length", 9, 2)
    stream = wire.stream_parser()
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    ]
    texts = [stream.feed(SseEvent("message", json.dumps(c))) for c in chunks]
    assert texts == [None, "Hel", "lo", None]
    stream.feed(SseEvent("message", "[DONE]"))
    assert stream.done
    result = stream.result()
    assert (result.text, result.input_tokens, result.output_tokens, result.pieces) == ("Hello", 9, 2, 2)


def test_openai_content_filter_and_truncated_stream_are_errors() -> None:
    with pytest.raises(ContentPolicy):
        OpenAIWire().parse({"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]})
    with pytest.raises(ServerError):
        OpenAIWire().parse({"nothing": True})
    stream = OpenAIWire().stream_parser()
    stream.feed(SseEvent("message", json.dumps({"choices": [{"delta": {"content": "Hel"}}]})))
    with pytest.raises(ServerError):
        stream.result()


def test_usage_is_counted_when_the_server_sends_none() -> None:
    call = Call(model="m", sampling=Sampling(), messages=[ChatMessage(role="user", content="a" * 30)])
    streamed = Completion(text="Hello there", pieces=3)
    assert streamed.usage(call).input_tokens == estimate_tokens("a" * 30) and streamed.usage(call).output_tokens == 3
    whole = Completion(text="Hello there")
    assert whole.usage(call).output_tokens == estimate_tokens("Hello there")
    assert Completion(text="x", input_tokens=4, output_tokens=1).usage(call).total_tokens == 5


# --- Anthropic -------------------------------------------------------------------------------------
def test_anthropic_body_puts_system_apart_and_clamps_temperature() -> None:
    wire = AnthropicWire()
    call = Call(model="claude-sonnet-4-5", sampling=SAMPLING, messages=CHAT, stream=True)
    assert wire.url("https://api.anthropic.com", call) == "https://api.anthropic.com/v1/messages"
    body = wire.body(call)
    assert body["system"] == "Be brief." and [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["temperature"] == 1.0 and "top_p" not in body and body["max_tokens"] == 32
    assert body["stop_sequences"] == ["\n\n"] and body["stream"] is True
    assert wire.headers("k") == {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert wire.body(Call(model="m", sampling=Sampling(), prompt="Once"))["messages"] == [
        {"role": "user", "content": "Once"}
    ]


def test_anthropic_answer_counts_cache_tokens_as_input() -> None:
    done = AnthropicWire().parse({
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "max_tokens",
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 2}})  # fmt: skip
    assert (done.text, done.finish_reason, done.input_tokens, done.output_tokens) == ("Hi", "length", 105, 2)
    with pytest.raises(ContentPolicy):
        AnthropicWire().parse({"content": [], "stop_reason": "refusal", "usage": {}})


def test_anthropic_stream_events_as_sent() -> None:
    raw = b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        for name, data in [
            ("message_start", {"type": "message_start",
                               "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
            ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "!"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": 15}}),
            ("message_stop", {"type": "message_stop"}),
        ]
    )  # fmt: skip
    stream = AnthropicWire().stream_parser()
    texts = [stream.feed(e) for e in events(raw, split=5)]
    assert [t for t in texts if t] == ["Hi", "!"] and stream.done
    result = stream.result()
    assert (result.text, result.finish_reason, result.input_tokens, result.output_tokens) == ("Hi!", "stop", 25, 15)


def test_anthropic_error_event_mid_stream_is_typed() -> None:
    stream = AnthropicWire().stream_parser()
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    with pytest.raises(RateLimited):
        stream.feed(SseEvent("error", json.dumps(error)))
    with pytest.raises(ServerError):
        AnthropicWire().stream_parser().result()  # ended before message_stop


# --- Gemini ----------------------------------------------------------------------------------------
def test_gemini_url_keeps_the_key_out_and_body_maps_roles() -> None:
    wire = GeminiWire()
    call = Call(model="gemini-2.5-pro", sampling=SAMPLING, messages=CHAT, stream=True)
    url = wire.url("https://generativelanguage.googleapis.com", call)
    assert url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert "key" not in url and wire.headers("k") == {"x-goog-api-key": "k"}
    body = wire.body(call)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["generationConfig"] == {"temperature": 1.5, "topP": 0.9, "maxOutputTokens": 32,
                                        "stopSequences": ["\n\n"], "seed": 3}  # fmt: skip
    assert wire.url("http://h", Call(model="gemini-2.5-pro", sampling=SAMPLING)).endswith(":generateContent")


def test_gemini_answer_counts_thinking_as_output_and_skips_thought_parts() -> None:
    done = GeminiWire().parse({
        "candidates": [{"content": {"parts": [{"text": "plan", "thought": True}, {"text": "Hi"}]},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1, "thoughtsTokenCount": 20}})  # fmt: skip
    assert (done.text, done.finish_reason, done.input_tokens, done.output_tokens) == ("Hi", "stop", 7, 21)


def test_gemini_blocked_prompt_and_safety_stop_are_content_policy() -> None:
    with pytest.raises(ContentPolicy):
        GeminiWire().parse({"promptFeedback": {"blockReason": "SAFETY"}})
    with pytest.raises(ContentPolicy):
        GeminiWire().parse({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]})


def test_gemini_stream_takes_the_last_usage_and_needs_a_finish_reason() -> None:
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "He"}]}}], "usageMetadata": {"promptTokenCount": 4}},
        {"candidates": [{"content": {"parts": [{"text": "y"}]}, "finishReason": "MAX_TOKENS"}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2}},
    ]  # fmt: skip
    raw = b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks)
    stream = GeminiWire().stream_parser()
    assert [stream.feed(e) for e in events(raw, split=4)] == ["He", "y"]
    result = stream.result()
    assert (result.text, result.finish_reason, result.input_tokens, result.output_tokens) == ("Hey", "length", 4, 2)
    with pytest.raises(ServerError):
        GeminiWire().stream_parser().result()


# --- error events inside OpenAI and Gemini streams are typed like the HTTP errors they stand for --------
@pytest.mark.parametrize(
    ("wire", "error", "kind"),
    [
        (OpenAIWire, {"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"},
         RateLimited),
        (OpenAIWire, {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None},
         Unavailable),
        (OpenAIWire, {"message": "maximum context length is 128000 tokens", "type": "invalid_request_error",
                      "code": "context_length_exceeded"}, ContextTooLong),
        (OpenAIWire, {"message": "The server had an error", "type": "server_error", "code": None}, ServerError),
        (OpenAIWire, {"message": "Incorrect API key provided", "type": "invalid_request_error",
                      "code": "invalid_api_key"}, AuthFailed),
        (GeminiWire, {"code": 429, "message": "You exceeded your current quota, please check your plan and billing "
                      "details.", "status": "RESOURCE_EXHAUSTED"}, Unavailable),
        (GeminiWire, {"code": 429, "message": "Too many requests", "status": "RESOURCE_EXHAUSTED"}, RateLimited),
        (GeminiWire, {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}, ServerError),
        (GeminiWire, {"code": 400, "message": "The input token count (1048577) exceeds the maximum number of tokens "
                      "allowed (1048576).", "status": "INVALID_ARGUMENT"}, ContextTooLong),
    ],
)  # fmt: skip
def test_an_error_event_mid_stream_is_typed(
    wire: type[OpenAIWire | GeminiWire], error: dict[str, object], kind: type[Exception]
) -> None:
    """OpenAI's and Gemini's in-stream errors, typed like the HTTP errors they stand for."""
    stream = wire().stream_parser()
    with pytest.raises(kind) as caught:
        stream.feed(SseEvent("message", json.dumps({"error": error})))
    assert type(caught.value) is kind


def test_response_format_is_passed_to_openai_and_gemini() -> None:
    """OpenAI-compatible providers get response_format as sent; Gemini its JSON mode with the schema."""
    fmt = ResponseFormat(type="json_schema", name="c", json_schema='{"type":"object"}', strict=True)
    call = Call(model="m", sampling=Sampling(response_format=fmt), messages=CHAT)
    assert OpenAIWire().body(call)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "c", "schema": {"type": "object"}, "strict": True},
    }
    config = GeminiWire().body(call)["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == {"type": "object"}
    plain = Call(model="m", sampling=Sampling(response_format=ResponseFormat(type="json_object")), messages=CHAT)
    assert OpenAIWire().body(plain)["response_format"] == {"type": "json_object"}


def test_openai_tools_pass_through_both_ways() -> None:
    """tools, tool_choice, parallel_tool_calls, the history's calls and results go out in OpenAI's own
    shape; message.tool_calls in the answer become the result's calls."""
    from schemas.base import ToolCall
    from schemas.request import Tool

    tool = Tool(name="f", description="d", parameters='{"type":"object"}')
    history = [
        ChatMessage(role="user", content="go"),
        ChatMessage(role="assistant", content="", tool_calls=[ToolCall(id="c1", name="f", arguments="{}")]),
        ChatMessage(role="tool", content="42", tool_call_id="c1"),
    ]
    call = Call(
        model="m", sampling=Sampling(tools=[tool], tool_choice="f", parallel_tool_calls=False), messages=history
    )
    body = OpenAIWire().body(call)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]
    assert (
        body["tool_choice"] == {"type": "function", "function": {"name": "f"}} and body["parallel_tool_calls"] is False
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    answer = {
        "choices": [{"message": {"content": None, "tool_calls": [{"id": "c2", "type": "function",
                     "function": {"name": "f", "arguments": '{"x": 1}'}}]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }  # fmt: skip
    done = OpenAIWire().parse(answer)
    assert done.finish_reason == "tool_calls" and done.tool_calls == [ToolCall(id="c2", name="f", arguments='{"x": 1}')]


def test_openai_logprobs_are_asked_for_and_read() -> None:
    call = Call(model="m", sampling=Sampling(logprobs=True, top_logprobs=2), messages=CHAT)
    body = OpenAIWire().body(call)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    top = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]
    entry = {"token": "Hi", "logprob": -0.1, "bytes": None, "top_logprobs": top}
    answer = {"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop", "logprobs": {"content": [entry]}}]}
    done = OpenAIWire().parse(answer)
    assert (
        done.logprobs is not None
        and done.logprobs[0].token == "Hi"
        and done.logprobs[0].top_logprobs[0].bytes == [72, 105]
    )


def test_openai_n_is_passed_and_every_choice_read() -> None:
    """n > 1 on an OpenAI-compatible provider: n in the body, each choice an alternative in order."""
    call = Call(model="m", sampling=Sampling(n=3), messages=CHAT)
    assert OpenAIWire().body(call)["n"] == 3
    answer = {
        "choices": [{"message": {"content": f"a{i}"}, "finish_reason": "stop"} for i in range(3)],
        "usage": {"prompt_tokens": 3, "completion_tokens": 6},
    }
    done = OpenAIWire().parse(answer)
    assert done.text == "a0" and [c.text for c in done.alternatives] == ["a1", "a2"] and done.output_tokens == 6


def test_gemini_logprobs_are_asked_for_and_read() -> None:
    call = Call(model="gemini-2.5-pro", sampling=Sampling(logprobs=True, top_logprobs=2), messages=CHAT)
    config = GeminiWire().body(call)["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 2
    result = {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.2}],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.2}, {"token": "Yo", "logProbability": -1.9}]}
        ],
    }
    answer = {
        "candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP", "logprobsResult": result}]
    }
    done = GeminiWire().parse(answer)
    assert done.logprobs is not None and done.logprobs[0].logprob == -0.2
    assert [a.token for a in done.logprobs[0].top_logprobs] == ["Hi", "Yo"]
