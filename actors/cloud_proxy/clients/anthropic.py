"""Anthropic's Messages API: ``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version``,
whole or streamed as server-sent events::

    event: message_start        {"message": {..., "usage": {"input_tokens": 25, "output_tokens": 1}}}
    event: content_block_start  {"index": 0, "content_block": {"type": "text", "text": ""}}
    event: ping
    event: content_block_delta  {"index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
    event: content_block_stop
    event: message_delta        {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}
    event: message_stop
    event: error                {"error": {"type": "overloaded_error", "message": "Overloaded"}}

System messages become the top-level ``system``; a raw prompt becomes one user turn. Only
``temperature`` (clamped to Anthropic's 0..1) is sent of the sampling knobs, not ``top_p``: current
models refuse both at once. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from actors.cloud_proxy.clients.base import Call, Completion, decode_json
from actors.cloud_proxy.clients.sse import SseEvent
from actors.cloud_proxy.clients.streamstate import StreamState
from actors.cloud_proxy.clients.tools import anthropic_calls, anthropic_messages, anthropic_tools
from actors.cloud_proxy.errors import ContentPolicy, ServerError, classify
from schemas.result import FinishReason

API_VERSION = "2023-06-01"
_STATUS = {"rate_limit_error": 429, "overloaded_error": 529, "api_error": 500, "invalid_request_error": 400}


def finish(reason: Any) -> FinishReason:
    if reason == "max_tokens":
        return "length"
    if reason == "refusal":
        raise ContentPolicy("the model refused to answer (stop_reason: refusal)")
    return "stop"


class AnthropicWire:
    def url(self, base_url: str, call: Call) -> str:
        return f"{base_url}/v1/messages"

    def headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": API_VERSION}

    def body(self, call: Call) -> dict[str, Any]:
        s = call.sampling
        chat = call.chat()
        system = "\n\n".join(m.content for m in chat if m.role == "system")
        body: dict[str, Any] = {
            "model": call.model,
            "max_tokens": s.max_tokens,
            "messages": anthropic_messages(chat),
            "temperature": min(s.temperature, 1.0),
            **anthropic_tools(s),
        }
        if system:
            body["system"] = system
        if s.stop:
            body["stop_sequences"] = s.stop
        if call.stream:
            body["stream"] = True
        return body

    def parse(self, data: Any) -> Completion:
        try:
            text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
            usage = data.get("usage") or {}
            calls = anthropic_calls(data["content"])
            return Completion(
                text=text,
                finish_reason="tool_calls" if calls else finish(data.get("stop_reason")),
                tool_calls=calls,
                input_tokens=_input_tokens(usage),
                output_tokens=usage.get("output_tokens"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ServerError(f"unexpected answer shape: {type(exc).__name__} {exc}") from exc

    def stream_parser(self) -> AnthropicStream:
        return AnthropicStream()


def _input_tokens(usage: dict[str, Any]) -> int | None:
    """Prompt-cache reads and writes are input tokens too."""
    if "input_tokens" not in usage:
        return None
    return sum(
        int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


class AnthropicStream(StreamState):
    def feed(self, event: SseEvent) -> str | None:
        if event.event == "ping" or not event.data.strip():
            return None
        obj = decode_json(event.data)
        kind = obj.get("type", event.event) if isinstance(obj, dict) else None
        if kind == "content_block_start":  # a tool_use block: a call starts (its input comes as JSON pieces)
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.deltas.start(obj.get("index"), block.get("id"), str(block.get("name") or ""))
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "input_json_delta":
                self.deltas.add(obj.get("index"), str(delta.get("partial_json") or ""))
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            if text:
                self.parts.append(text)
                self.pieces += 1
                return str(text)
        elif kind == "message_start":
            usage = (obj.get("message") or {}).get("usage") or {}
            self.input_tokens = _input_tokens(usage)
            self.output_tokens = usage.get("output_tokens")
        elif kind == "message_delta":
            usage = obj.get("usage") or {}
            if "output_tokens" in usage:
                self.output_tokens = usage["output_tokens"]
            if usage.get("input_tokens") is not None:
                self.input_tokens = _input_tokens(usage)
            self.finish = finish((obj.get("delta") or {}).get("stop_reason"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = obj.get("error") or {}
            status = _STATUS.get(str(err.get("type")), 500)
            raise classify(status, event.data.encode(), {}, 0.0)
        return None

    def result(self) -> Completion:
        if not self.done:
            raise ServerError("the stream ended before message_stop")
        return self.completion()
