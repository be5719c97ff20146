"""The cloud proxy: answers dispatches to the cloud tiers (Together AI, OpenAI, Anthropic, Gemini).

It consumes ``orch.dispatch.cloud.<provider>.<model>`` (one durable consumer, ``cloud-proxy``, shared
by every instance), calls the provider through :class:`~actors.cloud_proxy.provider.Provider` (limits,
retries, cooldowns, keys), streams chunks on ``orch.stream.<origin>.<id>`` when asked, and publishes the
outcome the way docs/protocol.md says: the result on ``orch.result.<origin>.<id>``, a failed attempt on
``orch.result.<origin>.<id>.failed`` for the router to fall back. It owns KV ``orch_providers`` and emits
``provider.cooldown`` events. It serves ``orch.svc.cloud.embed`` (cloud embedding models, held and
charged through the budget_guard: embed.py). Secrets stay here: error texts are scrubbed of every key it ever read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from functools import partial
from typing import Any

from actors.cloud_proxy import embed as embeddings
from actors.cloud_proxy.clients import Call, Completion
from actors.cloud_proxy.errors import ProviderError
from actors.cloud_proxy.messages import CloudMsg, DispatchArrived, Embed, KeysTick, ProviderChanged, StateTick
from actors.cloud_proxy.provider import Provider
from bus import subjects
from bus.actor import Actor
from bus.consumer import ConsumerSpec, Delivery
from bus.errors import ServiceCallError
from bus.kv import TypedKV
from bus.log import redact
from bus.outcomes import (
    ChunkSender,
    build_result,
    has_outcome,
    provenance_of,
    publish_failure,
    publish_outcome,
    stored_failure,
)
from bus.service import ServiceSpec
from policy.pricing import cloud_cost, estimate_tokens
from schemas.budget import RELEASE_REPLY, RESERVE_REPLY, ReleaseRequest, ReserveReply, ReserveRequest
from schemas.cache import EmbedReply
from schemas.codec import DISPATCH, Codec
from schemas.config.models import CloudModel
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Dispatch
from schemas.embeddings import CLOUD_EMBED_REQUEST, CloudEmbedRequest
from schemas.errors import ErrorInfo
from schemas.events import ProviderCooldown
from schemas.result import GenerateResult, Provenance, Response, Timings, ToolCallDelta, Usage
from schemas.state import ProviderState

log = logging.getLogger(__name__)
PROVIDER_STATE: Codec[ProviderState] = Codec(ProviderState)
STATE_EVERY = 5.0  # seconds between KV refreshes of latency figures (changes are written at once)


class CloudProxy(Actor):
    """Provider clients for the cloud tiers: keys, rate limits, retries, cooldowns, cost."""

    name = "cloud_proxy"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        models = cfg.cloud_models()
        self.providers = {
            name: Provider(name, pcfg, {m: c for m, c in models.items() if c.provider == name}, self._on_change)
            for name, pcfg in cfg.providers.items()
        }
        self._kv: TypedKV[ProviderState] | None = None
        self._written: dict[str, ProviderState] = {}

    def services(self) -> list[ServiceSpec]:
        ask = self.handle
        return [ServiceSpec(subjects.SVC_CLOUD_EMBED, lambda req: ask(Embed(req)), CLOUD_EMBED_REQUEST, concurrency=32)]

    async def embed(self, req: CloudEmbedRequest) -> EmbedReply:
        """``orch.svc.cloud.embed``: held, called, charged (actors/cloud_proxy/embed.py)."""

        async def reserve(ask: ReserveRequest) -> ReserveReply:
            return await self.call(subjects.SVC_BUDGET_RESERVE, ask, RESERVE_REPLY, 2.0)

        async def release(req: ReleaseRequest) -> None:
            with contextlib.suppress(ServiceCallError):  # else it is held until it expires
                await self.call(subjects.SVC_BUDGET_RELEASE, req, RELEASE_REPLY, 2.0)

        async def store(result: GenerateResult, origin: str) -> None:
            await publish_outcome(self, result, origin)

        return await embeddings.embed(
            req, cfg=self.cfg, providers=self.providers, reserve=reserve, release=release, store=store
        )

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream=subjects.DISPATCH_STREAM,
                durable="cloud-proxy",
                subjects=(subjects.DISPATCH_CLOUD,),
                handler=self.deliver(DispatchArrived),
                concurrency=self.cfg.cloud_proxy.concurrency,
                description="cloud tiers: Together AI, OpenAI, Anthropic, Gemini",
                **self.consumer_defaults(),
            )
        ]

    async def on_start(self) -> None:
        self._kv = await TypedKV.open(self.js, subjects.KV_PROVIDERS, PROVIDER_STATE)
        for name, provider in self.providers.items():
            await provider.start()
            self.every(f"keys:{name}", provider.keys.refresh, partial(KeysTick, name))
            await self._write(provider)
        self.every("provider-state", STATE_EVERY, StateTick)

    async def on_stop(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    # --- messages --------------------------------------------------------------------------------
    async def handle(self, msg: CloudMsg) -> Any:
        """The one entry point; a service's message returns its reply."""
        match msg:
            case DispatchArrived(d=d):
                await self.dispatch(d)
            case Embed(req=req):
                return await self.embed(req)
            case ProviderChanged(name=name, event=event):
                await self._changed(self.providers[name], event)
            case KeysTick(name=name):
                await self.providers[name].keys.load()
            case StateTick():
                await self._refresh_states()
        return None

    async def _on_change(self, provider: Provider, event: ProviderCooldown | None) -> None:
        await self.handle(ProviderChanged(provider.name, event))

    # --- provider state --------------------------------------------------------------------------
    async def _changed(self, provider: Provider, event: ProviderCooldown | None) -> None:
        if event is not None:
            await self.emit(event)
        await self._write(provider)

    async def _write(self, provider: Provider) -> None:
        state = provider.state()
        if self._kv is None:
            return
        try:
            await self._kv.put(provider.name, state)
            self._written[provider.name] = state
        except Exception as exc:  # KV is a view for others: never fail a request over it
            log.warning("cannot write state of %s: %s", provider.name, exc)

    async def _refresh_states(self) -> None:
        for provider in self.providers.values():
            state, old = provider.state(), self._written.get(provider.name)
            if old is None or _differs(state, old):
                await self._write(provider)

    # --- dispatches ------------------------------------------------------------------------------
    async def dispatch(self, d: Delivery) -> None:
        dispatch = DISPATCH.decode(d.data)
        taken = time.time()
        request = dispatch.request
        if (d.num_delivered > 1 or dispatch.attempt > 0) and await self._settled(dispatch):
            log.info("request %s attempt %d already settled: not calling again", request.id, dispatch.attempt)
            return
        target = dispatch.target
        model = self.cfg.models.get(target.model)
        provider = self.providers.get(target.provider or (model.provider if isinstance(model, CloudModel) else ""))
        if not isinstance(model, CloudModel) or provider is None:
            message = f"no cloud provider {target.provider!r} serves model {target.model!r} here"
            info = ErrorInfo.of("not_found" if model is None else "unavailable", message)
            await publish_failure(self, dispatch, info)
            return
        call = Call(
            model=model.remote_name,
            sampling=dispatch.effective_sampling,
            messages=request.messages,
            prompt=request.prompt,
            stream=request.stream,  # function calls stream as deltas (clients/tools.py CallDeltas)
        )
        chunks = ChunkSender(self, request.id, dispatch.attempt, request.origin) if call.stream else None

        async def forward(piece: str | ToolCallDelta) -> None:
            if chunks is not None:
                await chunks.send_pieces([piece])

        try:
            completion = await provider.run(call, target.model, request.effective_deadline, forward)
        except ProviderError as err:
            await self._fail(dispatch, call, model, err, chunks)
            return
        if chunks is not None:
            await chunks.send("", done=True, finish_reason=completion.finish_reason)
        result = self._result(dispatch, call, model, provider, completion, d, taken)
        if not await publish_outcome(self, result, request.origin):
            # Another outcome was stored first (the router gave up on us): the money is spent all the
            # same, so the attempt is recorded with its cost for the budget ledger.
            info = ErrorInfo.of("cancelled", "the request was answered before this attempt finished")
            await publish_failure(self, dispatch, info, usage=result.usage, cost_usd=result.cost_usd)

    async def _settled(self, dispatch: Dispatch) -> bool:
        """A stored outcome for the request, or a failure stored for this very attempt."""
        request_id, origin = dispatch.request.id, dispatch.request.origin
        if await has_outcome(self.js, request_id, origin):
            return True
        failed = await stored_failure(self.js, request_id, origin)
        return failed is not None and failed.attempt >= dispatch.attempt

    async def _fail(
        self, dispatch: Dispatch, call: Call, model: CloudModel, err: ProviderError, chunks: ChunkSender | None
    ) -> None:
        request = dispatch.request
        usage, cost, streamed = Usage(), 0.0, chunks is not None and chunks.sent
        if streamed and chunks is not None:  # tokens were generated and will be billed
            usage = Usage(input_tokens=estimate_tokens(call.prompt_text()), output_tokens=chunks.index)
            cost = cloud_cost(model, usage)
        log.debug("request %s on %s failed: %s", request.id, dispatch.target.where, err.code)
        await publish_failure(self, dispatch, err.to_info(redact), streamed=streamed, usage=usage, cost_usd=cost)

    def _result(
        self,
        dispatch: Dispatch,
        call: Call,
        model: CloudModel,
        provider: Provider,
        completion: Completion,
        d: Delivery,
        taken: float,
    ) -> GenerateResult:
        request = dispatch.request
        now, mono = time.time(), time.monotonic()
        usage = completion.usage(call)
        sent = dispatch.dispatched_at or d.published_at
        first = now - (mono - completion.first_token_at) if completion.first_token_at else 0.0
        provenance = provenance_of(dispatch, family=model.family, tier=provider.cfg.tier, target=provider.name)
        return build_result(
            dispatch,
            provenance,
            text=completion.text,
            finish_reason=completion.finish_reason,
            tool_calls=completion.tool_calls,
            logprobs=completion.logprobs,
            usage=usage,
            cost_usd=cloud_cost(model, usage),
            timings=Timings(
                queue_ms=max(0.0, (taken - sent) * 1000.0),
                first_token_ms=max(0.0, (first - taken) * 1000.0) if first else 0.0,
                generation_ms=(now - taken) * 1000.0,
                total_ms=max(0.0, (now - (request.created_at or sent)) * 1000.0),
            ),
            now=now,
            choices=_choices(request.id, [completion, *completion.alternatives], usage, provenance)
            if completion.alternatives
            else None,
        )


def _choices(request_id: str, done: list[Completion], usage: Usage, provenance: Provenance) -> list[Response]:
    """n > 1: every choice of the provider's answer (usage is the answer's whole, on the first)."""
    return [
        Response(
            request_id=f"{request_id}-{i}",
            text=c.text,
            finish_reason=c.finish_reason,
            provenance=provenance,
            usage=usage if i == 0 else Usage(),
            logprobs=c.logprobs,
            tool_calls=c.tool_calls,
        )
        for i, c in enumerate(done)
    ]


def _differs(a: ProviderState, b: ProviderState) -> bool:
    return (a.available, a.cooldown_until, a.consecutive_failures, a.p50_latency_ms, a.cooling) != (
        b.available,
        b.cooldown_until,
        b.consecutive_failures,
        b.p50_latency_ms,
        b.cooling,
    )
