"""The engine protocol: one loaded model, served from one dedicated thread.

A ``Llama`` model (or a ctransformers one) must never be called from two threads, so every engine owns a
thread for its whole life: it loads the model there, serves every generation there, and frees it there.
The event loop talks to it through ``Generation`` handles:

    engine = LlamaCppEngine(spec)          # or CTransformersEngine
    await engine.start()                   # load in the engine's thread; raises ModelLoadError / OutOfMemory
    gen = engine.submit(prompt, params, deadline=..., stream=True)
    async for text in gen.pieces(): ...    # streamed text, as the thread produces it
    done = await gen.result()              # Completion, or raises ContextTooLong / DeadlineExceeded / ...
    gen.cancel()                           # the caller went away: the thread stops at its next step
    await engine.stop()                    # fails what is left with Unloading, frees the model
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from actors.gpu_host.errors import EngineError, GpuHostError, Unloading
from schemas.result import TokenLogprob

log = logging.getLogger(__name__)

Finish = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # GBNF the output must follow (structured output, tool calls)
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class LoadSpec:
    name: str
    path: Path
    context: int  # tokens per sequence
    batch: int  # sequences decoded together (n_seq_max)
    n_threads: int = 1
    n_threads_batch: int = 1
    device: str = "cpu"
    n_gpu_layers: int = -1
    main_gpu: int = 0
    tensor_split: tuple[float, ...] | None = None  # by device index
    model_type: str | None = None  # ctransformers architecture
    chat_format: str | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Finish
    input_tokens: int
    output_tokens: int
    queue_s: float  # submitted -> admitted into the batch
    first_token_s: float  # submitted -> first token
    generation_s: float  # admitted -> done
    logprobs: list[TokenLogprob] | None = None  # when asked (GenParams.logprobs)


@dataclass(frozen=True)
class Segments:
    """A prompt in pieces: ``(text, literal)``; literal text (what a client wrote) is tokenised without
    special-token parsing, the rest (a chat template's markers) with it."""

    parts: tuple[tuple[str, bool], ...]

    def __str__(self) -> str:
        return "".join(text for text, _ in self.parts)


Prompt = str | Segments


class Generation:
    """One request inside an engine. Created on the event loop; fed by the engine's thread."""

    def __init__(self, prompt: Prompt, params: GenParams, *, deadline: float, stream: bool, rank: int = 1) -> None:
        self.prompt, self.params, self.deadline, self.stream = prompt, params, deadline, stream
        self.rank = rank  # the request's priority_rank: lower ranks leave the waiting queue first
        self.loop = asyncio.get_running_loop()
        self.submitted = time.monotonic()
        self.cancelled = False  # set on the loop, read by the thread
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._done: asyncio.Future[Completion] = self.loop.create_future()

    # --- engine thread side ------------------------------------------------------------------------
    def push_text(self, text: str) -> None:
        if self.stream and text:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._queue.put_nowait, text)

    def finish(self, completion: Completion) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self._settle, completion, None)

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._settle, None, exc)

    def expired(self) -> bool:
        return self.cancelled or time.time() >= self.deadline

    # --- event loop side ---------------------------------------------------------------------------
    def _settle(self, completion: Completion | None, exc: BaseException | None) -> None:
        if self._done.done():
            return
        if exc is not None:
            self._done.set_exception(exc)
        else:
            self._done.set_result(completion)  # type: ignore[arg-type]
        self._queue.put_nowait(None)

    async def pieces(self) -> AsyncIterator[str]:
        while True:
            text = await self._queue.get()
            if text is None:
                return
            yield text

    async def result(self) -> Completion:
        return await asyncio.shield(self._done)

    @property
    def done(self) -> bool:
        return self._done.done()

    @property
    def settled(self) -> asyncio.Future[Completion]:
        return self._done

    def on_settled(self, callback: Callable[[Generation], None]) -> None:
        self._done.add_done_callback(lambda _: callback(self))

    def cancel(self) -> None:
        self.cancelled = True


class Engine(Protocol):
    spec: LoadSpec
    load_s: float

    async def start(self) -> None: ...
    async def drain(self, timeout: float) -> None: ...
    async def stop(self) -> None: ...
    def submit(
        self, prompt: Prompt, params: GenParams, *, deadline: float, stream: bool = False, rank: int = 1
    ) -> Generation: ...
    @property
    def active(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def tokens_per_s(self) -> float: ...


class ThreadEngine:
    """The thread discipline shared by the engines: load, serve and free in one thread.

    Subclasses implement ``_load()``, ``_serve_step(waiting)`` (one scheduling step; returns False when
    idle) and ``_free()``; they hand generations back through their handles only."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.load_s = 0.0
        self._inbox: deque[Generation] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loaded: asyncio.Future[None] | None = None
        self._finished: asyncio.Future[None] | None = None
        self._running = 0  # generations admitted and not done (written by the thread)
        self._pending: set[Generation] = set()  # submitted and not settled (loop side)
        self.peak_batch = 0  # most sequences decoded together in one step (written by the thread)
        self._rate = Rate()

    # --- loop side -----------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loaded, self._finished = loop.create_future(), loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(loop,), name=f"engine:{self.spec.name}", daemon=True)
        self._thread.start()
        await asyncio.shield(self._loaded)

    async def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._finished is not None:
            await asyncio.shield(self._finished)

    def submit(
        self, prompt: Prompt, params: GenParams, *, deadline: float, stream: bool = False, rank: int = 1
    ) -> Generation:
        """``rank``: the request's ``priority_rank``; while every slot is busy, the waiting generation of
        the lowest rank is admitted first (oldest first within a rank)."""
        gen = Generation(prompt, params, deadline=deadline, stream=stream, rank=rank)
        with self._cv:
            if self._stopping:
                gen.fail(Unloading(f"model {self.spec.name!r} is being unloaded"))
                return gen
            self._inbox.append(gen)
            self._cv.notify_all()
        self._pending.add(gen)
        gen.on_settled(self._pending.discard)
        return gen

    async def drain(self, timeout: float) -> None:
        """Wait until every submitted generation is settled, at most ``timeout`` seconds."""
        if self._pending:
            await asyncio.wait([g.settled for g in list(self._pending)], timeout=timeout)

    @property
    def active(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._inbox)

    @property
    def tokens_per_s(self) -> float:
        return self._rate.value()

    # --- engine thread -----------------------------------------------------------------------------
    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._loaded is not None and self._finished is not None
        loaded, finished = self._loaded, self._finished
        started = time.monotonic()
        try:
            self._load()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            err = exc if isinstance(exc, GpuHostError) else EngineError(f"loading {self.spec.name!r}: {exc}")
            loop.call_soon_threadsafe(_set_exception, loaded, err)
            loop.call_soon_threadsafe(_set_result, finished)
            return
        self.load_s = time.monotonic() - started
        loop.call_soon_threadsafe(_set_result, loaded)
        try:
            while True:
                with self._cv:
                    if self._stopping:
                        break
                busy = self._serve_step()
                if not busy:
                    with self._cv:
                        if not self._inbox and not self._stopping:
                            self._cv.wait(timeout=0.5)
        except BaseException as exc:  # noqa: BLE001 - a crashed engine fails its requests, never silently
            log.exception("engine %s crashed", self.spec.name)
            self._abort_all(EngineError(f"engine of {self.spec.name!r} failed: {exc}"))
        finally:
            self._abort_all(Unloading(f"model {self.spec.name!r} was unloaded"))
            with contextlib.suppress(Exception):
                self._free()
            loop.call_soon_threadsafe(_set_result, finished)

    def _take(self, limit: int) -> list[Generation]:
        """Up to ``limit`` waiting generations, highest priority first, oldest first within a priority
        (called by the thread)."""
        with self._cv:
            if limit <= 0 or not self._inbox:
                return []
            ordered = sorted(self._inbox, key=_by_rank)  # stable: submission order within a rank
            self._inbox = deque(ordered[limit:])
            return ordered[:limit]

    def _abort_all(self, exc: GpuHostError) -> None:
        for gen in self._take(1_000_000):
            gen.fail(exc)
        self._abort_running(exc)

    # --- for subclasses ----------------------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _serve_step(self) -> bool:
        raise NotImplementedError

    def _abort_running(self, exc: GpuHostError) -> None:
        raise NotImplementedError

    def _free(self) -> None:
        raise NotImplementedError


def _by_rank(gen: Generation) -> int:
    return gen.rank


class Rate:
    """Tokens per second over the last few seconds of work (written by one thread, read by another)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._events: deque[tuple[float, int, float]] = deque()  # (end time, tokens, busy seconds)

    def add(self, tokens: int, seconds: float) -> None:
        now = time.monotonic()
        self._events.append((now, tokens, seconds))
        while self._events and now - self._events[0][0] > self.window:
            self._events.popleft()

    def value(self) -> float:
        events = list(self._events)
        busy = sum(e[2] for e in events)
        return sum(e[1] for e in events) / busy if busy > 0 else 0.0


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _set_exception(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
