"""The gateway's heavy-body parser: the same answers in the low-priority worker process as on the loop,
the worker really another process at a lower CPU priority, and a dead worker replaced without a failed
request."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator

import pytest

from actors.gateway.offload import NICE, Offload, Parsed, Refused, parse_body

VISIBLE = frozenset({"auto", "smollm2-135m"})
CJK = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "日本" * 50_000}]}).encode()


def parse(raw: bytes, chat: bool = True) -> Parsed | Refused:
    return parse_body(raw, chat, "alice", VISIBLE, 60.0)


@pytest.fixture
async def worker() -> AsyncIterator[Offload]:
    offload = Offload(1)
    try:
        yield offload
    finally:
        await offload.close()


def test_parse_body_refuses_what_the_handler_refused() -> None:
    unknown = parse(b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"bogus":1}')
    assert unknown == Refused("is not a parameter of this endpoint", "bogus")
    hidden = parse(b'{"model":"gemma3-270m","messages":[{"role":"user","content":"hi"}]}')
    assert hidden == Refused("The model `gemma3-270m` does not exist", "model")
    too_long = parse(json.dumps({"model": "auto", "prompt": "x" * 1_000_001}).encode(), chat=False)
    assert isinstance(too_long, Refused) and too_long.field == "prompt"
    nested = parse(b'{"model":"auto","messages":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert isinstance(nested, Refused)
    ok = parse(b'{"model":"auto","stream":true,"stream_options":{"include_usage":true},'
               b'"messages":[{"role":"user","content":"hi"}]}')  # fmt: skip
    assert isinstance(ok, Parsed) and ok.include_usage and ok.gen.stream and ok.gen.client_key == "alice"


async def test_the_worker_is_another_process_at_lower_priority(worker: Offload) -> None:
    assert await worker.run(os.getpid) != os.getpid()
    assert await worker.run(os.nice, 0) == min(19, os.nice(0) + NICE)


async def test_a_heavy_body_parses_the_same_in_the_worker(worker: Offload) -> None:
    there = await worker.run(parse_body, CJK, True, "alice", VISIBLE, 60.0)
    here = parse(CJK)
    assert isinstance(there, Parsed) and isinstance(here, Parsed)
    assert there.gen.messages == here.gen.messages and there.gen.client_key == "alice"
    bad = CJK.replace(b'"role": "user"', b'"role": "user", "name": "eve"')  # refused by to_request
    assert bad != CJK
    assert await worker.run(parse_body, bad, True, "alice", VISIBLE, 60.0) == parse(bad)


async def test_no_workers_runs_on_the_loop() -> None:
    assert await Offload(0).run(os.getpid) == os.getpid()


async def test_a_killed_worker_is_replaced_and_no_request_fails(worker: Offload) -> None:
    dead = await worker.run(os.getpid)
    os.kill(dead, signal.SIGKILL)
    assert await worker.run(os.getpid) != dead  # the next parse: in a new worker or on the loop, not lost
    again = await worker.run(os.getpid)
    assert again not in (dead, os.getpid())  # then a worker again
