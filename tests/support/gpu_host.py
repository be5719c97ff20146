"""Helpers for gpu_host tests: a profile with the tiny model, publishing dispatches, reading outcomes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from bus import subjects
from schemas.codec import ATTEMPT_FAILED, OUTCOME, encode
from schemas.dispatch import Dispatch, Target
from schemas.request import GenerateRequest, Sampling, make_request
from schemas.result import AttemptFailed, GenerateResult, Outcome
from tests.support.profile import write_profile
from tests.support.wait import eventually

HOST = "cpu0"


def tiny_entry(path: Path, **extra: Any) -> dict[str, Any]:
    """A library entry for the tiny random llama written by tests.support.tiny_models."""
    entry: dict[str, Any] = {
        "kind": "local",
        "family": "tiny",
        "params": "116K",
        "engine": "llama_cpp",
        "source": {"kind": "path", "path": str(path)},
        "quant": "f32",
        "bits": 32,
        "context_length": 256,
        "max_batch_size": 4,
        "keep_alive": "warm",
        "description": "a 2-layer random llama written by the tests",
    }
    entry.update(extra)
    return entry


def host_profile(
    dest: Path,
    nats_url: str,
    models: dict[str, dict[str, Any]],
    *,
    memory: str = "1.5GB",
    real_models: str = "warm",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """The local profile with extra models, one thread, and the PyPI models not preloaded unless asked."""
    base: dict[str, Any] = {
        "models": {
            "smollm2-135m": {"keep_alive": real_models},
            "gemma3-270m": {"keep_alive": real_models},
            **models,
        },
        "hosts": {HOST: {"n_threads": 1, "n_threads_batch": 1, "heartbeat": "500ms"}},
        "cards": {HOST: {"memory": memory}},
    }
    for key, value in (overrides or {}).items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return write_profile(dest, nats_url, overrides=base)


def request(
    prompt: str | None = None, *, messages: Any = None, stream: bool = False, timeout_s: float = 60.0, **sampling: Any
) -> GenerateRequest:
    return make_request(
        prompt=prompt,
        messages=messages,
        stream=stream,
        timeout_s=timeout_s,
        sampling=Sampling(**sampling),
        client_key="key-1",
        task="task-1",
    )


async def dispatch(nc: NATS, model: str, req: GenerateRequest, *, attempt: int = 0, host: str = HOST) -> Dispatch:
    d = Dispatch(
        request=req,
        target=Target(tier="local", model=model, family="", host=host),
        attempt=attempt,
        dispatched_at=time.time(),
    )
    await nc.jetstream().publish(
        subjects.dispatch_host(host, model), encode(d), headers={"Nats-Msg-Id": f"{req.id}:{attempt}"}
    )
    return d


async def stored(nc: NATS, subject: str) -> Msg | None:
    try:
        return await nc.jetstream().get_last_msg("RESULTS", subject)
    except NotFoundError:
        return None


async def outcome(nc: NATS, request_id: str, timeout: float = 30.0) -> Outcome:
    msg = await eventually(lambda: stored(nc, subjects.result(request_id)), timeout=timeout)
    return OUTCOME.decode(msg.data)


async def result(nc: NATS, request_id: str, timeout: float = 30.0) -> GenerateResult:
    out = await outcome(nc, request_id, timeout)
    assert isinstance(out, GenerateResult), out
    return out


async def failure(nc: NATS, request_id: str, timeout: float = 30.0) -> AttemptFailed:
    msg = await eventually(lambda: stored(nc, subjects.attempt_failed(request_id)), timeout=timeout)
    return ATTEMPT_FAILED.decode(msg.data)


async def count(nc: NATS, subject: str) -> int:
    info = await nc.jetstream().stream_info("RESULTS", subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)
