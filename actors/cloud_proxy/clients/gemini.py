"""Google Gemini's generateContent: ``POST {base}/v1beta/models/{model}:generateContent``, streamed
with ``:streamGenerateContent?alt=sse`` (each ``data:`` event is a whole GenerateContentResponse;
the stream ends when the connection does). The key goes in the ``x-goog-api-key`` header, never in
the URL: URLs end up in logs.

Usage comes from ``usageMetadata`` (the last one of a stream is complete); thinking tokens
(``thoughtsTokenCount``) are billed as output and counted as output. A blocked prompt or a candidate
stopped for safety becomes ContentPolicy. Pure: no I/O.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from actors.cloud_proxy.clients.base import Call, Completion, decode_json
from actors.cloud_proxy.clients.sse import SseEvent
from actors.cloud_proxy.clients.streamstate import StreamState
from actors.cloud_proxy.clients.tools import gemini_calls, gemini_contents, gemini_tools
from actors.cloud_proxy.errors import ContentPolicy, ServerError, classify
from schemas.result import FinishReason, TokenLogprob, TopLogprob

_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}


def finish(reason: Any) -> FinishReason:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _BLOCKED:
        raise ContentPolicy(f"the answer was blocked (finishReason: {reason})")
    return "stop"


def _usage(meta: Any) -> tuple[int | None, int | None]:
    if not isinstance(meta, dict) or "promptTokenCount" not in meta:
        return None, None
    output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return int(meta["promptTokenCount"]), output


def _candidate(data: Any) -> tuple[str, Any]:
    """(text, finishReason) of the first candidate; ContentPolicy when the prompt was blocked."""
    if not isinstance(data, dict):
        raise ServerError("unexpected answer shape")
    candidates = data.get("candidates") or []
    if not candidates:
        block = (data.get("promptFeedback") or {}).get("blockReason")
        if block:
            raise ContentPolicy(f"the prompt was blocked (blockReason: {block})")
        return "", None
    cand = candidates[0]
    parts = (cand.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
    return text, cand.get("finishReason")


def gemini_logprobs(result: Any) -> list[TokenLogprob] | None:
    """``logprobsResult``: the chosen token of each step and its top candidates."""
    if not isinstance(result, dict) or not isinstance(result.get("chosenCandidates"), list):
        return None
    tops = result.get("topCandidates") or []
    out = []
    for i, chosen in enumerate(result["chosenCandidates"]):
        if not isinstance(chosen, dict):
            continue
        step = tops[i].get("candidates", []) if i < len(tops) and isinstance(tops[i], dict) else []
        alternatives = [
            TopLogprob(token=str(c.get("token", "")), logprob=float(c.get("logProbability", 0.0)))
            for c in step
            if isinstance(c, dict)
        ]
        out.append(
            TokenLogprob(
                token=str(chosen.get("token", "")),
                logprob=float(chosen.get("logProbability", 0.0)),
                bytes=list(str(chosen.get("token", "")).encode()),
                top_logprobs=alternatives,
            )
        )
    return out


class GeminiWire:
    def url(self, base_url: str, call: Call) -> str:
        model = quote(call.model, safe="-._~/")
        if not model.startswith(("models/", "tunedModels/")):
            model = f"models/{model}"
        if call.stream:
            return f"{base_url}/v1beta/{model}:streamGenerateContent?alt=sse"
        return f"{base_url}/v1beta/{model}:generateContent"

    def headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def body(self, call: Call) -> dict[str, Any]:
        s = call.sampling
        chat = call.chat()
        system = "\n\n".join(m.content for m in chat if m.role == "system")
        config: dict[str, Any] = {"temperature": s.temperature, "topP": s.top_p, "maxOutputTokens": s.max_tokens}
        if s.stop:
            config["stopSequences"] = s.stop
        if s.seed is not None:
            config["seed"] = s.seed
        if s.presence_penalty:
            config["presencePenalty"] = s.presence_penalty
        if s.frequency_penalty:
            config["frequencyPenalty"] = s.frequency_penalty
        if s.logprobs or s.top_logprobs:
            config["responseLogprobs"] = True
            if s.top_logprobs:
                config["logprobs"] = s.top_logprobs
        if s.response_format is not None:  # Gemini's JSON mode, with the schema when there is one
            config["responseMimeType"] = "application/json"
            if s.response_format.json_schema:
                config["responseJsonSchema"] = json.loads(s.response_format.json_schema)
        body: dict[str, Any] = {"contents": gemini_contents(chat), "generationConfig": config, **gemini_tools(s)}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        return body

    def parse(self, data: Any) -> Completion:
        text, reason = _candidate(data)
        calls = gemini_calls(((data.get("candidates") or [{}])[0].get("content") or {}).get("parts"))
        if reason is None and not text and not calls:
            raise ServerError("the answer has no candidates")
        input_tokens, output_tokens = _usage(data.get("usageMetadata"))
        return Completion(
            text=text,
            finish_reason="tool_calls" if calls else finish(reason),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tool_calls=calls,
            logprobs=gemini_logprobs((data.get("candidates") or [{}])[0].get("logprobsResult")),
        )

    def stream_parser(self) -> GeminiStream:
        return GeminiStream()


class GeminiStream(StreamState):
    def feed(self, event: SseEvent) -> str | None:
        if not event.data.strip():
            return None
        obj = decode_json(event.data)
        if isinstance(obj, dict) and "error" in obj:  # {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            code = err.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            raise classify(status, event.data.encode(), {}, time.time())
        text, reason = _candidate(obj)
        parts = ((obj.get("candidates") or [{}])[0].get("content") or {}).get("parts")
        for call in gemini_calls(parts):  # Gemini sends a functionCall whole: one delta with its arguments
            self.deltas.start(object(), call.id, call.name, call.arguments)
        usage = _usage(obj.get("usageMetadata"))
        if usage[0] is not None:
            self.input_tokens, self.output_tokens = usage
        if reason:
            self.finish = finish(reason)
        if text:
            self.parts.append(text)
            self.pieces += 1
            return text
        return None

    def result(self) -> Completion:
        if self.finish is None:
            raise ServerError("the stream ended without a finishReason")
        return self.completion()
