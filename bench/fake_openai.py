"""A fast fake OpenAI-compatible backend for benchmarks: answers /v1/chat/completions (and
/v1/completions) with a fixed short reply and usage, after an optional delay; a chat request with
``"stream": true`` gets the same reply as server-sent chunks (role, four content pieces, the finish with
usage, ``[DONE]``), the delay before the first. Not a test double:
it is the "backend" every contender (direct, the orchestra, LiteLLM) talks to in bench/gateway.py.
``--echo``: a non-streamed answer repeats the request's last message (or prompt) after "You said: ", so answers
differ as the requests do (bench/soak.py: the monitor embeds each answer of a task, as with real models).

    python bench/fake_openai.py --port 0 --delay-ms 50 [--echo]   # prints "listening on <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import msgspec
import uvloop
from aiohttp import web


def _said(req: dict[str, Any], chat: bool) -> str:
    """What the request said last: the last message's text, or the prompt (at most 200 characters)."""
    if chat:
        messages = req.get("messages") or [{}]
        said = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    else:
        said = req.get("prompt")
    return f"You said: {said if isinstance(said, str) else ''}"[:200]


def reply_for(body: bytes, chat: bool, echo: bool = False) -> bytes:
    req = msgspec.json.decode(body)
    model = req.get("model", "fake")
    text = _said(req, chat) if echo else None
    created = int(time.time())
    usage = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text or "This is a fast fake answer."},
            "logprobs": None,
            "finish_reason": "stop",
        }
        obj = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    else:
        obj = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text or "a fast fake answer", "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }
    return msgspec.json.encode(obj)


PIECES = ("This is ", "a fast ", "fake ", "answer.")


def chunks_for(body: bytes) -> list[bytes]:
    """The streamed reply as SSE events (OpenAI's chat.completion.chunk shape)."""
    model = msgspec.json.decode(body).get("model", "fake")
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def event(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + msgspec.json.encode({**base, "choices": [choice], **extra}) + b"\n\n"

    usage = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": piece}) for piece in PIECES]
    out.append(event({}, "stop", usage=usage))
    out.append(b"data: [DONE]\n\n")
    return out


def make_app(delay_s: float, echo: bool = False) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        if b'"stream":true' not in body.replace(b" ", b""):
            return web.Response(body=reply_for(body, True, echo), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for chunk in chunks_for(body):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def completions(request: web.Request) -> web.Response:
        body = await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(body=reply_for(body, False, echo), content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]})

    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/chat/completions", chat),
            web.post("/v1/completions", completions),
            web.get("/v1/models", models),
        ]
    )
    return app


async def serve(port: int, delay_ms: float, echo: bool) -> None:
    runner = web.AppRunner(make_app(delay_ms / 1000.0, echo), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on {bound}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--echo", action="store_true", help="answers repeat the request's last message")
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.port, args.delay_ms, args.echo))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
