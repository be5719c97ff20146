"""OpenAI's wire format: Chat Completions (``POST {base}/chat/completions``) and Completions
(``POST {base}/completions``), whole or streamed as server-sent events (``data: {chunk}`` ...
``data: [DONE]``). Any OpenAI-compatible server speaks it: Together AI, vLLM, llama.cpp's servers.

The key goes in ``Authorization: Bearer``. Streams ask for ``stream_options.include_usage``, so the
final event carries the usage; servers that ignore it get their tokens counted. Pure: no I/O.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec

from actors.cloud_proxy.clients.base import Call, Completion, decode_json
from actors.cloud_proxy.clients.sse import SseEvent
from actors.cloud_proxy.clients.streamstate import StreamState
from actors.cloud_proxy.clients.tools import openai_calls, openai_message, openai_tools
from actors.cloud_proxy.errors import ContentPolicy, ProviderError, ServerError, classify
from schemas.request import ResponseFormat
from schemas.result import FinishReason, TokenLogprob


def finish(reason: Any) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "content_filter":
        raise ContentPolicy("the provider's content filter stopped the answer")
    return "stop"


# An error event inside a stream has no HTTP status of its own: the one its type or code stands for.
_STREAM_STATUS = {
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "tokens_exceeded": 429,
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "permission_error": 403,
    "timeout": 504,
}


def stream_error(obj: dict[str, Any]) -> ProviderError:
    """``data: {"error": {"message", "type", "code"}}`` mid-stream: typed like the HTTP error it stands
    for (rate limit, quota, context too long, auth...), a server error when it names nothing known."""
    err = obj.get("error")
    if not isinstance(err, dict):
        return ServerError(f"error event in the stream: {err}")  # masked, then cut, by ProviderError
    status = next((_STREAM_STATUS[str(v)] for v in (err.get("code"), err.get("type")) if str(v) in _STREAM_STATUS), 500)
    return classify(status, json.dumps(obj).encode(), {}, time.time())


def openai_logprobs(given: Any) -> list[TokenLogprob] | None:
    """A chat choice's ``logprobs.content`` (a completion's legacy lists are left out)."""
    content = given.get("content") if isinstance(given, dict) else None
    if not isinstance(content, list):
        return None
    cleaned = [
        {
            **t,
            "bytes": t.get("bytes") or [],
            "top_logprobs": [{**a, "bytes": a.get("bytes") or []} for a in t.get("top_logprobs") or []],
        }
        for t in content
        if isinstance(t, dict)
    ]
    try:
        return msgspec.convert(cleaned, list[TokenLogprob])
    except (msgspec.ValidationError, TypeError, AttributeError):
        return None  # logprobs in a shape we do not know: the answer still stands


def openai_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    """``response_format`` as OpenAI (and llama.cpp's server, vLLM, Together) take it: passed through."""
    if fmt.type == "json_object" or not fmt.json_schema:
        return {"type": "json_object"}
    schema = {"name": fmt.name or "answer", "schema": json.loads(fmt.json_schema), "strict": fmt.strict}
    return {"type": "json_schema", "json_schema": schema}


def _choice(choice: dict[str, Any]) -> Completion:
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    calls = openai_calls(choice.get("message"))
    reason = "tool_calls" if calls else finish(choice.get("finish_reason"))
    return Completion(
        text=text or "", finish_reason=reason, tool_calls=calls, logprobs=openai_logprobs(choice.get("logprobs"))
    )


class OpenAIWire:
    def url(self, base_url: str, call: Call) -> str:
        return f"{base_url}/completions" if call.prompt is not None else f"{base_url}/chat/completions"

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def body(self, call: Call) -> dict[str, Any]:
        s = call.sampling
        body: dict[str, Any] = {"model": call.model}
        if call.prompt is not None:
            body["prompt"] = call.prompt
        else:
            body["messages"] = [openai_message(m) for m in call.chat()]
            body.update(openai_tools(s))
        body["max_tokens"] = s.max_tokens
        body["temperature"] = s.temperature
        body["top_p"] = s.top_p
        if s.stop:
            body["stop"] = s.stop
        if s.seed is not None:
            body["seed"] = s.seed
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        if s.n > 1:
            body["n"] = s.n
        if s.logprobs or s.top_logprobs:
            if call.prompt is None:
                body["logprobs"] = True
                if s.top_logprobs:
                    body["top_logprobs"] = s.top_logprobs
            else:
                body["logprobs"] = s.top_logprobs
        if s.response_format is not None and call.prompt is None:
            body["response_format"] = openai_response_format(s.response_format)
        if call.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def parse(self, data: Any) -> Completion:
        try:
            first, *others = [_choice(c) for c in data["choices"]]
            completion = first
            completion.alternatives = others  # n > 1
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ServerError(f"unexpected answer shape: {type(exc).__name__} {exc}") from exc
        usage = data.get("usage")
        if isinstance(usage, dict):
            completion.input_tokens = usage.get("prompt_tokens")
            completion.output_tokens = usage.get("completion_tokens")
        return completion

    def stream_parser(self) -> OpenAIStream:
        return OpenAIStream()


class OpenAIStream(StreamState):
    def _calls(self, delta: Any) -> None:
        """``delta.tool_calls``: the first entry of a call has its id and name, later ones arguments."""
        for c in (delta.get("tool_calls") if isinstance(delta, dict) else None) or []:
            if not isinstance(c, dict):
                continue
            key, fn = c.get("index", 0), c.get("function") or {}
            fragment = str(fn.get("arguments") or "")
            if not self.deltas.known(key):
                self.deltas.start(key, c.get("id"), str(fn.get("name") or ""), fragment)
            else:
                self.deltas.add(key, fragment)

    def feed(self, event: SseEvent) -> str | None:
        data = event.data.strip()
        if data == "[DONE]":
            self.done = True
            return None
        if not data:
            return None
        obj = decode_json(data)
        if not isinstance(obj, dict):
            raise ServerError("unexpected stream event")
        if "error" in obj:
            raise stream_error(obj)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = usage.get("prompt_tokens")
            self.output_tokens = usage.get("completion_tokens")
        text = None
        for choice in obj.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            self._calls(delta)
            if choice.get("finish_reason"):
                self.finish = finish(choice["finish_reason"])
        if text:
            self.parts.append(text)
            self.pieces += 1
            return str(text)
        return None

    def result(self) -> Completion:
        if not self.done and self.finish is None:
            raise ServerError("the stream ended before the answer was complete")
        return self.completion()
