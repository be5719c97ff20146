"""The gateway's HTTP plumbing: JSON and OpenAI-shaped error responses, and the middleware that turns aiohttp's
own refusals (and any bug) into those, refusing an oversized body before it is read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from actors.gateway import openai_api as oa
from actors.gateway.wire import SERVER
from schemas.errors import ErrorInfo

log = logging.getLogger("actors.gateway.handlers")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers)


def error_response(info: ErrorInfo, request_id: str | None = None) -> web.Response:
    public = oa.public_error(info)
    if public is not info:
        log.info("request %s failed: %s: %s", request_id, info.code, info.message)
    status, body = oa.error_body(public)
    headers = {"X-Request-Id": request_id} if request_id else {}
    if info.retry_after_s:
        headers["Retry-After"] = str(max(1, round(info.retry_after_s)))
    return json_response(body, status, headers)


def internal_error() -> web.Response:
    """A bug's answer: a 500 without a traceback (the log has it)."""
    body = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}
    return json_response(body, 500)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = web.AppKey("max_body", int)


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's answers name the server as the fast lane's do (aiohttp's default gives its version away)."""
    response.headers["Server"] = SERVER


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals and any bug as OpenAI-shaped JSON errors (never a traceback to the client).
    A body that announces more than ``gateway.max_body`` is refused before it is read (and the connection
    closed): reading megabytes only to refuse them took the event loop from every other client."""
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        message = f"the request body exceeds the gateway's limit of {limit} bytes"
        refused = json_response({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                           "code": None}}, 413)  # fmt: skip
        refused.force_close()
        return refused
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            message = f"the request body exceeds the gateway's limit of {request.app[MAX_BODY]} bytes"
        else:
            message = exc.reason
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return json_response(body, exc.status)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("gateway: unexpected error on %s %s", request.method, request.path)
        if request.writer.output_size > 0:  # an answer has begun: another would land inside it; aiohttp closes
            raise ConnectionResetError("the answer had begun when the handler failed") from None
        return internal_error()
