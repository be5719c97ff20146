"""Auto-remediation end to end with real parts: a real gpu_host (llama.cpp on tiny GGUF models), the
router and the diversity_monitor on a real nats-server. Loads past the card's memory produce real
`oom` events; the monitor's gpu_oom_failures rule fires; its commands make the gpu_host unload the
largest model and load a smaller one of the same family; requests in flight still end once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from actors.diversity_monitor.actor import DiversityMonitor
from actors.gpu_host.actor import GpuHost
from actors.router.actor import Router
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from schemas.codec import Codec
from schemas.commands import LoadModel, UnloadModel
from schemas.config import OrchestraConfig, load_config
from schemas.events import AlertRaised, ModelLoaded, ModelUnloaded, Oom, Remediation
from schemas.request import GenerateRequest, Requirements, Sampling, make_request
from schemas.result import GenerateResult, Outcome
from schemas.state import HostState, QueueState
from tests.support.actors import Actors
from tests.support.client import ask, outcomes_stored
from tests.support.events import Recorder
from tests.support.gpu_host import HOST, host_profile, tiny_entry
from tests.support.minilm import embedder, model_dir
from tests.support.tiny_models import write_tiny_llama_gguf
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


async def test_real_ooms_make_the_gpu_host_swap_to_a_smaller_model_and_nothing_is_lost(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    big = write_tiny_llama_gguf(tmp_path / "big.gguf", n_embd=128, n_layer=4)
    small = write_tiny_llama_gguf(tmp_path / "small.gguf")
    models = {
        "tiny-big": tiny_entry(big, family="tinyfam", params="2M", keep_alive="hot", completion_only=True),
        "tiny-small": tiny_entry(small, family="tinyfam", params="116K", keep_alive="cold", completion_only=True),
        # declared with a context no card can hold: every load is refused, as an OOM
        "tiny-huge": tiny_entry(small, family="tinyfam", context_length=2**24, max_batch_size=1, keep_alive="cold"),
    }
    profile = host_profile(
        tmp_path / "profile",
        nats_server.url,
        models,
        overrides={
            "cache": {"semantic": {"model_dir": str(model_dir())}},
            "alerts": {
                "evaluate_every": "1s",
                "rules": {
                    "gpu_oom_failures": {
                        "description": "GPU OOM failures",
                        "when": [{"metric": "oom_errors", "op": ">", "value": 0, "window": "1h"}],
                        "severity": "high",
                        "action": "oom",
                    }
                },
            },
        },
    )
    cfg = load_config(profile)  # the local rules, with gpu_oom_failures firing on the first OOM
    heard = await Recorder.listen(nc, commands=True)
    host, loaded = await start_host_router_monitor(cfg, nc, actors)
    await eventually(lambda: _has(loaded, "tiny-big"), timeout=30)

    # a request in flight on the big model while the OOMs come in and the remediation runs
    long, in_flight = ask_long(nc, "tiny-big")

    for _ in range(2):  # loads past the card's memory: a real OOM event (a repeat is refused from memory)
        await host.send(LoadModel(host=HOST, model="tiny-huge", reason="test: too big for the card"))
    ooms = await eventually(lambda: heard.of(Oom), timeout=20)
    assert ooms[0].host == HOST and ooms[0].model == "tiny-huge" and ooms[0].requested_bytes > ooms[0].free_bytes

    raised = (await eventually(lambda: heard.of(AlertRaised), timeout=20))[0]
    assert raised.rule == "gpu_oom_failures"
    unload = (await eventually(lambda: heard.of(UnloadModel), timeout=20))[0]
    load = (await eventually(lambda: [c for c in heard.of(LoadModel) if c.by == "diversity_monitor"]))[0]
    assert (unload.model, load.model) == ("tiny-big", "tiny-small")
    fix = (await eventually(lambda: heard.of(Remediation)))[0]
    assert fix.alert_id == raised.alert_id and fix.action == "swap"

    # the real host did it
    await eventually(lambda: [e for e in heard.of(ModelUnloaded) if e.model == "tiny-big"], timeout=60)
    await eventually(lambda: [e for e in heard.of(ModelLoaded) if e.model == "tiny-small"], timeout=30)
    await eventually(lambda: _is(loaded, {"tiny-small"}), timeout=10)  # the host's state in KV follows

    # nothing lost: the request that was running finished (drained before the unload), once
    first = await in_flight
    assert isinstance(first, GenerateResult) and first.model == "tiny-big"
    assert await outcomes_stored(nc, long.id) == 1
    # and new work goes to the smaller model
    after = await ask(
        nc,
        make_request(
            prompt="the end",
            timeout_s=30,
            requirements=Requirements(family="tinyfam"),
            sampling=Sampling(max_tokens=32),  # within the tiny models' 256-token context
        ),
        timeout=30,
    )
    assert isinstance(after, GenerateResult) and after.model == "tiny-small"


async def start_host_router_monitor(
    cfg: OrchestraConfig, nc: NATS, actors: Actors
) -> tuple[GpuHost, Callable[[], Awaitable[set[str]]]]:
    """A real gpu_host, the router and the monitor in-process; ``loaded()`` reads the host's models from KV."""
    host = GpuHost(cfg, host=HOST)
    for actor in (host, Router(cfg, instance="r"), DiversityMonitor(cfg, instance="m", embedder=embedder())):
        await actors.start(actor)
    hosts = await TypedKV.open(nc.jetstream(), subjects.KV_HOSTS, Codec(HostState))

    async def loaded() -> set[str]:
        state = await hosts.get(HOST)
        return {m.model for m in state.models} if state else set()

    return host, loaded


def ask_long(nc: NATS, model: str) -> tuple[GenerateRequest, asyncio.Future[Outcome]]:
    """A 200-token request on ``model``, left running while the remediation happens."""
    request = make_request(
        prompt="once upon a time", model=model, timeout_s=60, sampling=Sampling(max_tokens=200, temperature=0)
    )
    return request, asyncio.ensure_future(ask(nc, request, timeout=60))


async def _has(loaded: Any, name: str) -> bool:
    return name in await loaded()


async def _is(loaded: Any, names: set[str]) -> bool:
    return await loaded() == names


async def test_a_backlog_makes_the_real_gpu_host_load_a_fast_model_and_nothing_is_lost(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """The lab's backlog rule end to end: a backlogged queue in orch_queues -> the monitor's
    queue_backlog_critical alert -> LoadModel of the rotator's scale-up model on the host with room ->
    the real gpu_host loads it (a model.loaded event, its state in KV) and serves it without a cold load;
    a request running on the backlogged model meanwhile ends once."""
    slow = write_tiny_llama_gguf(tmp_path / "slow.gguf", n_embd=128, n_layer=4)
    fast = write_tiny_llama_gguf(tmp_path / "fast.gguf")
    models = {
        "tiny-slow": tiny_entry(slow, family="tinyfam", params="2M", keep_alive="hot", completion_only=True),
        "tiny-fast": tiny_entry(fast, family="tinyfam", keep_alive="cold", completion_only=True),
    }
    profile = host_profile(
        tmp_path / "profile",
        nats_server.url,
        models,
        overrides={
            "cache": {"semantic": {"model_dir": str(model_dir())}},
            "alerts": {"evaluate_every": "500ms"},
            "rotator": {"scale": {"scale_up_models": ["tiny-fast"]}},
        },
    )
    cfg = load_config(profile)  # the local rules: queue_backlog_critical at > 500 pending, > 600 s waiting
    heard = await Recorder.listen(nc, commands=True)
    host, loaded = await start_host_router_monitor(cfg, nc, actors)
    await eventually(lambda: _has(loaded, "tiny-slow"), timeout=30)
    long, in_flight = ask_long(nc, "tiny-slow")

    queues = await TypedKV.open(nc.jetstream(), subjects.KV_QUEUES, Codec(QueueState))
    target = f"local:{HOST}:tiny-slow"
    await queues.put(
        target, QueueState(target=target, depth=620, oldest_wait_s=700, backlog=True, updated_at=time.time())
    )
    raised = (await eventually(lambda: heard.of(AlertRaised), timeout=20))[0]
    assert raised.rule == "queue_backlog_critical"
    load = (await eventually(lambda: [c for c in heard.of(LoadModel) if c.by == "diversity_monitor"]))[0]
    assert (load.host, load.model) == (HOST, "tiny-fast")
    fix = (await eventually(lambda: heard.of(Remediation)))[0]
    assert fix.alert_id == raised.alert_id and fix.action == "load_fast_model"

    # the real host did it: loaded, in its KV state, serving without a cold load
    await eventually(lambda: [e for e in heard.of(ModelLoaded) if e.model == "tiny-fast"], timeout=30)
    await eventually(lambda: _is(loaded, {"tiny-slow", "tiny-fast"}), timeout=10)
    served = await ask(
        nc,
        make_request(prompt="the end", model="tiny-fast", timeout_s=30, sampling=Sampling(max_tokens=16)),
        timeout=30,
    )
    assert isinstance(served, GenerateResult) and served.model == "tiny-fast" and served.timings.load_ms == 0

    first = await in_flight  # nothing lost: the request on the backlogged model ended, once
    assert isinstance(first, GenerateResult) and first.model == "tiny-slow"
    assert await outcomes_stored(nc, long.id) == 1
    assert not heard.of(UnloadModel), "a backlog adds a model, it unloads nothing"
