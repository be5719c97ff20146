"""What every provider client shares: the call and its answer (plain data), the wire-format protocol,
and the HTTP transport (``clients/http1.py``: one keep-alive pool per provider, timeouts).

    wire = OpenAIWire() | AnthropicWire() | GeminiWire()      pure: bodies in, answers out
    client = HttpClient(name, base_url, wire, concurrency=64, connect_timeout=5)
    await client.start()
    completion = await client.complete(call, key, timeout=client.timeout(total=.., idle=..), on_text=send_chunk)
    await client.close()

The transport's errors are converted here into :mod:`actors.cloud_proxy.errors` (``raise ... from exc``);
nothing above this module sees one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from actors.cloud_proxy.clients.http1 import ConnectFailed, HttpError, Pool, Response
from actors.cloud_proxy.clients.sse import SseDecoder, SseEvent
from actors.cloud_proxy.errors import ProviderError, ServerError, Timeout, classify
from policy.pricing import estimate_tokens
from schemas.base import ToolCall
from schemas.request import ChatMessage, Sampling
from schemas.result import FinishReason, TokenLogprob, ToolCallDelta, Usage

OnText = Callable[[str | ToolCallDelta], Awaitable[None]]  # text pieces and function-call deltas

_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode


def decode_json(data: str | bytes) -> Any:
    """JSON from a provider; garbage becomes a ServerError."""
    try:
        return _DECODE(data)
    except msgspec.DecodeError as exc:
        raise ServerError(f"the provider sent malformed JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Call:
    """One generation as the provider clients see it: the remote model name and what to send."""

    model: str  # the provider's name for it (CloudModel.remote_name)
    sampling: Sampling
    messages: list[ChatMessage] | None = None
    prompt: str | None = None  # a raw completion prompt (OpenAI /completions; a user turn elsewhere)
    stream: bool = False

    def chat(self) -> list[ChatMessage]:
        return self.messages if self.messages is not None else [ChatMessage(role="user", content=self.prompt or "")]

    def prompt_text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m.content for m in self.messages or ())


@dataclass(slots=True)
class Completion:
    """A provider's answer. Token counts are None when the provider sent none (then they are counted)."""

    text: str
    finish_reason: FinishReason = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None
    pieces: int = 0  # text-bearing stream events (one token each on llama.cpp / vLLM)
    first_token_at: float | None = None  # monotonic
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    alternatives: list[Completion] = field(default_factory=list)  # n > 1: the other choices, in order

    def usage(self, call: Call) -> Usage:
        counted_out = self.pieces if self.pieces else estimate_tokens(self.text) if self.text else 0
        return Usage(
            input_tokens=self.input_tokens if self.input_tokens is not None else estimate_tokens(call.prompt_text()),
            output_tokens=self.output_tokens if self.output_tokens is not None else counted_out,
        )


class StreamParser(Protocol):
    def feed(self, event: SseEvent) -> str | None:
        """The text this event adds (None for none). Raises ProviderError for an error event."""

    @property
    def done(self) -> bool: ...

    def take_calls(self) -> list[ToolCallDelta]:
        """Function-call deltas the events fed so far added (each returned once)."""

    def result(self) -> Completion: ...


class Wire(Protocol):
    """One provider's documented wire format. Pure: no I/O."""

    def url(self, base_url: str, call: Call) -> str: ...

    def headers(self, key: str) -> dict[str, str]: ...

    def body(self, call: Call) -> dict[str, Any]: ...

    def parse(self, data: Any) -> Completion: ...

    def stream_parser(self) -> StreamParser: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    total: float  # seconds until the request's deadline: the whole call, answer read included
    idle: float  # the longest silence accepted while the answer is awaited or streamed


class HttpClient:
    """The transport of one provider: a keep-alive pool, created once, reused by every call."""

    def __init__(
        self,
        name: str,
        base_url: str,
        wire: Wire,
        *,
        concurrency: int = 64,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name, self.base_url, self.wire = name, base_url.rstrip("/"), wire
        self.concurrency, self.connect_timeout = concurrency, connect_timeout
        self._pool: Pool | None = None

    async def start(self) -> None:
        if self._pool is None:
            self._pool = Pool(
                self.base_url, connect_timeout=self.connect_timeout, keepalive=60.0, max_idle=self.concurrency
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def timeout(self, *, total: float, idle: float) -> Timeouts:
        """``total``: until the request's deadline; ``idle``: the longest silence we accept."""
        return Timeouts(total=total, idle=idle)

    async def complete(self, call: Call, key: str, *, timeout: Timeouts, on_text: OnText | None = None) -> Completion:
        url = self.wire.url(self.base_url, call)
        headers = self.wire.headers(key)
        headers["Content-Type"] = "application/json"
        data = _ENCODE(self.wire.body(call))
        try:
            async with asyncio.timeout(timeout.total):
                async with await self._started().request("POST", url, headers, data, idle=timeout.idle) as resp:
                    if resp.status >= 400:
                        raw = await resp.read()
                        raise classify(resp.status, raw, resp.headers, time.time())
                    if not call.stream:
                        return self.wire.parse(decode_json(await resp.read()))
                    return await self._stream(resp, on_text)
        except (TimeoutError, HttpError) as exc:
            raise transport_error(self.name, exc) from exc

    async def post_json(self, url: str, body: dict[str, Any], key: str, *, timeout: Timeouts) -> Any:
        """One JSON request, one JSON answer (embeddings), errors converted as ``complete`` does."""
        headers = {**self.wire.headers(key), "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(timeout.total):
                resp = await self._started().request("POST", url, headers, _ENCODE(body), idle=timeout.idle)
                async with resp:
                    raw = await resp.read()
                    if resp.status >= 400:
                        raise classify(resp.status, raw, resp.headers, time.time())
                    return decode_json(raw)
        except (TimeoutError, HttpError) as exc:
            raise transport_error(self.name, exc) from exc

    def _started(self) -> Pool:
        if self._pool is None:
            raise RuntimeError(f"client {self.name} is not started")
        return self._pool

    async def _stream(self, resp: Response, on_text: OnText | None) -> Completion:
        decoder = SseDecoder()
        parser = self.wire.stream_parser()
        first: float | None = None
        async for chunk in resp.chunks():
            for event in decoder.feed(chunk):
                pieces = _pieces(parser, event)
                if pieces and first is None:
                    first = time.monotonic()
                await _forward(pieces, on_text)
            if parser.done:
                break
        for event in decoder.close():
            await _forward(_pieces(parser, event), on_text)
        completion = parser.result()
        completion.first_token_at = first
        return completion


def _pieces(parser: StreamParser, event: SseEvent) -> list[str | ToolCallDelta]:
    """What one event adds: its text, then the function-call deltas it carried."""
    text = parser.feed(event)
    return [*([text] if text else []), *parser.take_calls()]


async def _forward(pieces: list[str | ToolCallDelta], on_text: OnText | None) -> None:
    if on_text is not None:
        for piece in pieces:
            await on_text(piece)


def transport_error(name: str, exc: TimeoutError | HttpError) -> ProviderError:
    """A transport failure (timeout, connection, protocol) as the provider error it is."""
    if isinstance(exc, TimeoutError):
        return Timeout(f"{name}: no answer in time ({exc or type(exc).__name__})")
    if isinstance(exc, ConnectFailed):
        return ServerError(f"{name}: cannot connect: {exc.error.strerror or exc.error}")
    return ServerError(f"{name}: {type(exc).__name__}: {exc}")
