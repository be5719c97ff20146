"""Heavy bodies parsed off the gateway's event loop, in a worker process at a lower CPU priority.

    parse_body      decode a chat / completions body and build its GenerateRequest: Parsed, or Refused
                    (reason and field of the 400 / 404). The same function runs on the loop for small
                    bodies and in the worker for heavy ones, so both refuse exactly the same things.
    Offload         ``gateway.offload_workers`` processes (spawned on first use, ``os.nice(NICE)``) that run
                    it for bodies of ``gateway.heavy_body`` bytes or more.

Why a process: msgspec decodes 2.4 MB of escaped unicode in 8-12 ms holding the interpreter, so a worker
thread still took the loop from every other client (measured: the longest loop gap fell only from 26 to
18 ms). In a process of lower priority the kernel runs the gateway's own loop (and the router's, the
cache's) first when they share a core, and the hostile body's decode gets what is left. The worker sends
back the GenerateRequest (pickled: a memory copy, ~1.5 ms for 1.2 MB of CJK text, not a JSON parse).
A worker that dies (OOM, killed) is replaced; the request it held is parsed on the loop instead.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.gateway import openai_api as oa
from actors.gateway.requests import decode as decode_body
from schemas.errors import SchemaError
from schemas.request import GenerateRequest

log = logging.getLogger(__name__)

NICE = 10  # the worker's niceness above the gateway's: ~10% of a core the gateway's loop also wants
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Parsed:
    gen: GenerateRequest
    include_usage: bool  # stream_options.include_usage


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    field: str | None


def parse_body(
    raw: bytes, chat: bool, client_key: str, visible: frozenset[str], default_timeout: float
) -> Parsed | Refused:
    """Decode and check a body (linear in its size; ``gateway.max_body`` bounds it): the request, or why
    not (a SchemaError as plain data: it crosses a process boundary)."""
    try:
        body = decode_body(raw, chat=chat)
        if body.model not in visible:
            raise SchemaError(f"The model `{body.model}` does not exist", "model")
        gen = oa.to_request(body, client_key=client_key, default_timeout=default_timeout)
    except SchemaError as exc:
        return Refused(exc.reason, exc.field)
    return Parsed(gen, bool(body.stream_options and body.stream_options.include_usage))


def _lower_priority() -> None:
    os.nice(NICE)


class Offload:
    """Runs functions in ``workers`` low-priority processes (none: on the caller's loop)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:  # spawn, not fork: the gateway's sockets and loop stay out of the worker
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_lower_priority)
        return self._pool

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.workers <= 0:
            return fn(*args)
        pool = self._started()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            log.warning("gateway: the parse worker died; starting another, this body parsed on the loop")
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            return fn(*args)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
