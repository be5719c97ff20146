"""A worker for router tests: it speaks the dispatch/outcome protocol exactly like gpu_host and
cloud_proxy, but each target follows a script ("ok", "fail:<code>", "hang", "hold" (until ``released`` is
set, then "ok"), "stream", "streamhang", "slow:<s>",
"late:<s>": slow, then, if another answer was stored first, a cancelled attempt with its cost, as the
cloud_proxy records a provider call that went on after the router gave up on it),
so a test decides the order of events instead of sleeping. It also reports its hosts and providers
as up in KV, the way the real workers do."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bus import subjects
from bus.actor import Actor
from bus.consumer import ConsumerSpec, Delivery
from bus.kv import TypedKV
from bus.outcomes import ChunkSender, publish_failure, publish_outcome
from policy.pricing import cloud_cost
from schemas.codec import DISPATCH, Codec
from schemas.config.models import CloudModel
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Dispatch
from schemas.errors import ErrorInfo
from schemas.result import GenerateResult, Provenance, Timings, Usage
from schemas.state import CardState, HostState, LoadedModel, ProviderState


@dataclass
class Seen:
    request_id: str
    attempt: int
    where: str
    model: str
    at: float = field(default_factory=time.monotonic)


class ScriptedWorker(Actor):
    name = "scripted"

    def __init__(
        self,
        cfg: OrchestraConfig,
        *,
        hosts: dict[str, list[str]] | None = None,
        providers: list[str] | None = None,
        script: dict[str, list[str]] | None = None,
        answers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(cfg, instance="scripted")
        self.hosts = hosts or {}
        self.providers = providers or []
        self.script = {k: list(v) for k, v in (script or {}).items()}  # "<where>/<model>" -> behaviours
        self.answers = answers or {}  # model -> fixed answer text
        self.seen: list[Seen] = []
        self.released = asyncio.Event()  # what "hold" waits for

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream="DISPATCH",
                durable="scripted",
                subjects=(subjects.DISPATCH_ALL,),
                handler=self.handle,
                concurrency=64,
                **self.consumer_defaults(),
            )
        ]

    async def on_start(self) -> None:
        await self.report()
        self.spawn("heartbeat", self.heartbeat)

    async def report(self) -> None:
        hosts = await TypedKV.open(self.js, subjects.KV_HOSTS, Codec(HostState))
        for host, models in self.hosts.items():
            state = HostState(
                host=host,
                heartbeat_at=time.time(),
                cards=[CardState(card=host, total_bytes=10**10)],
                models=[LoadedModel(model=m) for m in models],
            )
            await hosts.put(host, state)
        providers = await TypedKV.open(self.js, subjects.KV_PROVIDERS, Codec(ProviderState))
        for p in self.providers:
            await providers.put(p, ProviderState(provider=p, available=True, updated_at=time.time()))

    def silence(self, host: str) -> None:
        """The host stops heartbeating (as if its process died); what it holds hangs."""
        self.hosts.pop(host, None)

    async def heartbeat(self) -> None:
        """Every second, like gpu_host's: a write that fails (the bus is failing over) is tried again at
        the next beat, not after a growing backoff."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.wait_for(self.report(), 2.0)
            except Exception as exc:
                self.log.debug("heartbeat not written: %s", exc)

    def behaviour(self, d: Dispatch) -> str:
        queue = self.script.get(f"{d.target.where}/{d.target.model}") or self.script.get("*") or ["ok"]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def handle(self, delivery: Delivery) -> None:
        d = DISPATCH.decode(delivery.data)
        self.seen.append(Seen(d.request.id, d.attempt, d.target.where, d.target.model))
        action = self.behaviour(d)
        kind, _, arg = action.partition(":")
        if kind == "fail":
            await publish_failure(self, d, ErrorInfo.of(arg or "provider_error", f"scripted {arg} failure"))
            return
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "hold":
            await self.released.wait()
        if kind in ("slow", "late"):
            await asyncio.sleep(float(arg))
        text = self.answers.get(d.target.model, f"{d.target.model}@{d.target.where}#{d.attempt}")
        if kind == "streamhang":  # part of the answer, then silence (a host dying mid-stream)
            sender = ChunkSender(self, d.request.id, d.attempt, d.request.origin)
            await sender.send(text.split(" ")[0] + " ")
            await asyncio.sleep(3600)
        if kind == "stream":
            sender = ChunkSender(self, d.request.id, d.attempt, d.request.origin)
            for word in text.split(" "):
                await sender.send(word + " ")
            await sender.send("", done=True, finish_reason="stop")
        model = self.cfg.models[d.target.model]
        sampling = d.effective_sampling
        usage = Usage(input_tokens=5, output_tokens=len(text.split()))
        cost = cloud_cost(model, usage) if kind == "late" and isinstance(model, CloudModel) else 0.0
        stored = await publish_outcome(
            self,
            GenerateResult(
                request_id=d.request.id,
                text=text,
                model=d.target.model,
                family=model.family,
                tier=d.target.tier,
                target=d.target.where,
                usage=usage,
                cost_usd=cost,
                timings=Timings(total_ms=(time.time() - d.request.created_at) * 1000),
                attempt=d.attempt,
                provenance=Provenance(
                    model=d.target.model,
                    family=model.family,
                    tier=d.target.tier,
                    target=d.target.where,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    prompt_variant=d.prompt_variant,
                ),
                client_key=d.request.client_key,
                task=d.request.task,
                parent_id=d.parent_id,
                created_at=time.time(),
                reservation_id=d.reservation_id,
                reserved_nanos=d.reserved_nanos,
            ),
            d.request.origin,
        )
        if not stored and kind == "late":  # the money is spent all the same: recorded with its cost
            info = ErrorInfo.of("cancelled", "the request was answered before this attempt finished")
            await publish_failure(self, d, info, usage=usage, cost_usd=cost)
