"""HTTP handlers of the gateway: OpenAI-compatible endpoints over the bus.

Each request becomes a GenerateRequest published to ``orch.request.<priority>.<origin>.<id>``; the handler
listens on ``orch.*.<id>`` (chunks and the outcome, in order) before it publishes, and answers with the
first outcome. Failures are OpenAI-shaped errors with the matching status, also for what aiohttp itself refuses (a body
over ``gateway.max_body`` is a 413, an unknown path a 404) and for a bug (a 500 without a traceback for the
client; the log has it). Errors that come back from the orchestra reach the client without its topology:
for the codes of :data:`~actors.gateway.openai_api.INTERNAL_CODES` the client reads a fixed sentence and
the request id, the operator finds the detail (host, provider, route) in the gateway's log.
A heavy request (a big body or a long prompt) takes a paced turn for its round trip (bus/pacer.py Pacer): one at a
time and spaced while light requests are around, at once when none is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS

from actors.gateway import embeddings as emb
from actors.gateway import openai_api as oa
from actors.gateway.http import error_response, json_response
from actors.gateway.inbox import Inbox, next_answer
from actors.gateway.keys import ClientKey, KeyStore
from actors.gateway.lanerequest import LaneRequest, LaneStream
from actors.gateway.limits import Admission, KeyLimiter
from actors.gateway.messages import ChunkSeen, ResultSeen
from actors.gateway.offload import Offload, Parsed, Refused, parse_body
from bus import subjects
from bus.errors import ServiceCallError
from bus.fair import FairGate, GateFull, Slot, no_slot
from bus.outcomes import StreamFollower
from bus.pacer import HeavyTurn, LightTurn, Pacer
from bus.service import call
from policy import keys as keypolicy
from schemas.base import new_id
from schemas.cache import EMBED_MODEL, EMBED_REPLY, MAX_EMBED_INPUTS, EmbedRequest
from schemas.codec import CHUNK, OUTCOME, encode
from schemas.config.root import OrchestraConfig
from schemas.embeddings import CloudEmbedRequest
from schemas.errors import ErrorInfo, SchemaError
from schemas.request import VIRTUAL_MODELS, GenerateRequest
from schemas.result import GenerateError, GenerateResult, Outcome

log = logging.getLogger(__name__)

Request = web.Request | LaneRequest  # aiohttp's, or one the fast lane took (fastlane.py)
Answer = web.StreamResponse | LaneStream  # a LaneStream: a stream the lane's request opened, already written

GRACE_S = 2.0  # wait this long past the deadline for the router's own timeout outcome
# Store a message in JetStream: Actor.publish(subject, obj, *, msg_id, timeout)
Publish = Callable[..., Awaitable[object]]


def _busy(waiting: int) -> ErrorInfo:
    return ErrorInfo.of(
        "rate_limited", f"this key has {waiting} requests waiting for the gateway, its limit", retry_after_s=1.0
    )


@dataclass(frozen=True)
class KeyView:
    policy: keypolicy.KeyPolicy
    visible: frozenset[str]  # model names the key may ask for
    context: int  # the longest context of the models it may use


class Api:
    """The endpoints, given what they need: the keys, the per-key limiter, the inbox of answers, the
    connection (health, embeddings), a publish function (requests) and the fair gates."""

    def __init__(
        self,
        cfg: OrchestraConfig,
        *,
        keys: KeyStore,
        owners: dict[str, str],
        limiter: KeyLimiter | None,
        inbox: Inbox,
        nc: NATS,
        publish: Publish,
        fair: FairGate,
        heavy: FairGate,
        pacer: Pacer,
        offload: Offload,
    ) -> None:
        self.cfg = cfg
        self.keys = keys
        self.owners = owners
        self.limiter = limiter
        self.inbox = inbox
        self.nc = nc
        self.publish = publish
        self.fair = fair  # per-key turns when all the gateway's slots are busy
        self.heavy = heavy  # big bodies' decode, keys in turn
        self.pacer = pacer  # heavy requests' round trips while light ones are around
        self.offload = offload  # big bodies' decode, in a low-priority process
        self._views: dict[ClientKey, KeyView] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model}", self.model),
            web.get("/healthz", self.health),
        ]

    # --- helpers -------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> ClientKey | web.Response:
        key = self.keys.check(request.headers.get("Authorization"))
        if key is None:
            return error_response(
                ErrorInfo.of("unauthorized", "Incorrect or missing API key: send `Authorization: Bearer <key>`")
            )
        return key

    def visible(self, key: ClientKey) -> list[str]:
        names = [*VIRTUAL_MODELS, *self.cfg.models, EMBED_MODEL, *self.cfg.embedding_models]
        free = (*VIRTUAL_MODELS, EMBED_MODEL)
        return names if not key.models else [n for n in names if n in key.models or n in free]

    # --- endpoints -----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        ok = self.nc.is_connected
        return json_response({"status": "ok" if ok else "degraded", "nats": ok}, 200 if ok else 503)

    async def models(self, request: web.Request) -> web.Response:
        key = self.authenticate(request)
        if isinstance(key, web.Response):
            return key
        return json_response(oa.models_list(self.visible(key), self.owners))

    async def model(self, request: web.Request) -> web.Response:
        key = self.authenticate(request)
        if isinstance(key, web.Response):
            return key
        name = request.match_info["model"]
        if name not in self.visible(key):
            return error_response(ErrorInfo.of("not_found", f"The model `{name}` does not exist", field="model"))
        return json_response(oa.models_list([name], self.owners)["data"][0])

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return _aiohttp_answer(await self._generate(request, chat=True))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return _aiohttp_answer(await self._generate(request, chat=False))

    async def lane(self, request: LaneRequest) -> Answer:
        """A request the fast lane took (POST /v1/chat/completions or /v1/completions, a light body)."""
        return await self._generate(request, chat=request.path == "/v1/chat/completions")

    async def _admitted(self, request: Request) -> tuple[ClientKey, bytes] | web.Response:
        """The caller's key and the body, or the refusal (unknown key; refused for its rate moments ago, or
        its share of the gateway's queue full: before the body is read)."""
        key = self.authenticate(request)
        if isinstance(key, web.Response):
            return key
        held = self._still_refused(key)
        if held is not None:
            return held
        return key, await request.read()

    async def _generate(self, request: Request, *, chat: bool) -> Answer:
        admitted = await self._admitted(request)
        if isinstance(admitted, web.Response):
            return admitted
        key, raw = admitted
        try:  # a flooding key's backlog waits its turn, not ours, a big body after small ones; then its lane
            async with self.fair.slot(key.id, self._heavy(raw)), self._lane(raw, key) as lane:
                return await self._serve(request, raw, key, chat=chat, lane=lane)
        except GateFull:
            return error_response(_busy(self.fair.max_waiting))

    def _heavy(self, raw: bytes) -> bool:
        """A body of ``gateway.heavy_body`` bytes or more: after small ones, in its lane, parsed off the loop."""
        return len(raw) >= self.cfg.gateway.heavy_body

    def _paced(self, raw: bytes, gen: GenerateRequest, key: ClientKey) -> HeavyTurn | LightTurn:
        """A heavy request (big body, or a prompt of ``gateway.heavy_prompt`` characters: measured, not
        scanned) takes a paced turn for its round trip; a light one is counted as around while it runs."""
        if self._heavy(raw) or keypolicy.prompt_chars(gen) >= self.cfg.gateway.heavy_prompt:
            return self.pacer.turn(key.id)
        return self.pacer.light()

    def _lane(self, raw: bytes, key: ClientKey) -> Slot:
        return self.heavy.slot(key.id) if self._heavy(raw) else no_slot()

    async def _serve(self, request: Request, raw: bytes, key: ClientKey, *, chat: bool, lane: Slot) -> Answer:
        parsed = await self._parse(raw, chat=chat, key=key)
        if not isinstance(parsed, Parsed):
            if parsed.field == "model" and "does not exist" in parsed.reason:
                return error_response(ErrorInfo.of("not_found", parsed.reason, field=parsed.field))
            return error_response(ErrorInfo.of("bad_request", parsed.reason, field=parsed.field))
        gen = parsed.gen
        policy = self._policy(key)
        refused = keypolicy.shape_error(policy.policy, gen, self.cfg) or keypolicy.context_error(gen, policy.context)
        if refused is not None:
            return error_response(refused, gen.id)
        admission = None
        if self.limiter is not None and key.limits.counted:  # no estimate, no I/O for a key without rates
            admission = await self.limiter.admit(key.id, key.limits, keypolicy.estimate(gen, self.cfg))
            if isinstance(admission, ErrorInfo):
                return error_response(admission, gen.id)
        used: int | None = None  # tokens the answer used; None: the estimate stands (streams, errors)
        lane.release()  # decoded: the next big body may be, while this one waits for its paced turn
        try:
            async with self._paced(raw, gen, key) as turn:
                if gen.stream:
                    return await self._stream(request, gen, chat=chat, include_usage=parsed.include_usage, lane=lane)
                outcome = await self._roundtrip(gen, lane)
                if isinstance(outcome, GenerateResult) and isinstance(turn, HeavyTurn):
                    turn.model_s = (outcome.timings.load_ms + outcome.timings.generation_ms) / 1000
            if isinstance(outcome, GenerateResult):
                used = outcome.usage.total_tokens
                shaped = oa.chat_response(outcome) if chat else oa.completion_response(outcome)
                return json_response(shaped, headers={"X-Request-Id": gen.id})
            return error_response(outcome.error, gen.id)
        finally:
            if isinstance(admission, Admission) and self.limiter is not None:
                await asyncio.shield(self.limiter.release(admission, used))

    def _still_refused(self, key: ClientKey) -> web.Response | None:
        """A key refused for its rate moments ago, or with its share of the gateway's queue full, is
        refused before its body is read."""
        if self.fair.full(key.id):
            return error_response(_busy(self.fair.max_waiting))
        if self.limiter is None or not key.limits.counted:
            return None
        refusal = self.limiter.still_refused(key.id)
        return error_response(refusal) if refusal is not None else None

    def _policy(self, key: ClientKey) -> KeyView:
        """What a key may see and ask, computed once per key (not on every request)."""
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= 1024:  # keys reloaded many times: start over
                self._views.clear()
            policy = keypolicy.KeyPolicy(frozenset(key.models), key.limits)
            names = self.visible(key)
            view = KeyView(policy, frozenset(names), keypolicy.largest_context(policy, self.cfg))
            self._views[key] = view
        return view

    async def _parse(self, raw: bytes, *, chat: bool, key: ClientKey) -> Parsed | Refused:
        """Decode and check a body, linear in its size (``gateway.max_body`` bounds it). A heavy one in the
        low-priority worker process (msgspec holds the interpreter: ~8-12 ms for 2.4 MB of escaped unicode
        would take the loop from every other client), a small one here."""
        args = (raw, chat, key.id, self._policy(key).visible, float(self.cfg.gateway.request_timeout))
        if self._heavy(raw):
            return await self.offload.run(parse_body, *args)
        return parse_body(*args)

    async def embeddings(self, request: web.Request) -> web.Response:
        admitted = await self._admitted(request)
        if isinstance(admitted, web.Response):
            return admitted
        key, raw = admitted
        try:
            async with self.fair.slot(key.id):
                return await self._embed(raw, key)
        except GateFull:
            return error_response(_busy(self.fair.max_waiting))

    async def _embed(self, raw: bytes, key: ClientKey) -> web.Response:
        try:
            body = emb.EMBEDDINGS.decode(raw)
            if body.model not in self._policy(key).visible:
                raise SchemaError(f"The model `{body.model}` does not exist", "model")
            cloud = emb.model_of(body, self.cfg)
            texts = emb.texts_of(body, cloud.max_inputs if cloud is not None else MAX_EMBED_INPUTS)
        except SchemaError as exc:
            missing = exc.field == "model" and not isinstance(exc, emb.NotEmbedding)
            return error_response(ErrorInfo.of("not_found" if missing else "bad_request", exc.reason, field=exc.field))
        admission = None
        if self.limiter is not None:
            admission = await self.limiter.admit(key.id, key.limits, sum(len(t) // 3 + 1 for t in texts))
            if isinstance(admission, ErrorInfo):
                return error_response(admission)
        used: int | None = None
        request_id = new_id()
        try:
            if cloud is None:
                ask: Any = EmbedRequest(texts=texts)
                subject, timeout = subjects.SVC_CACHE_EMBED, 30.0
            else:
                timeout = float(self.cfg.gateway.request_timeout)
                dims = body.dimensions if body.dimensions is not None else cloud.dimensions
                ask = CloudEmbedRequest(
                    request_id=request_id, model=body.model, texts=texts, dimensions=dims, client_key=key.id,
                    origin=subjects.ORIGIN_GATEWAY, deadline=time.time() + timeout,
                )  # fmt: skip
                subject = subjects.SVC_CLOUD_EMBED
            reply = await call(self.nc, subject, ask, EMBED_REPLY, timeout=timeout + GRACE_S)
            used = reply.tokens
            shaped = emb.response(reply, body.encoding_format, body.model)
            return json_response(shaped, headers={"X-Request-Id": request_id})
        except ServiceCallError as exc:
            return error_response(exc.info, request_id)
        finally:
            if isinstance(admission, Admission) and self.limiter is not None:
                await asyncio.shield(self.limiter.release(admission, used))

    # --- the bus -------------------------------------------------------------------------------
    async def _publish(self, gen: GenerateRequest, lane: Slot) -> None:
        subject = subjects.request(gen.priority, gen.id, subjects.ORIGIN_GATEWAY)
        try:
            await self.publish(subject, encode(gen), msg_id=gen.id, timeout=10.0)
        finally:
            lane.release()  # the next big body may be decoded

    def _timeout(self, gen: GenerateRequest) -> GenerateError:
        return GenerateError(request_id=gen.id, error=ErrorInfo.of("timeout", "no answer before the deadline"))

    async def _roundtrip(self, gen: GenerateRequest, lane: Slot) -> Outcome:
        queue = self.inbox.open(gen.id)
        try:
            await self._publish(gen, lane)
            while True:
                wait = gen.effective_deadline - time.time() + GRACE_S
                answer = await next_answer(queue, max(wait, 0.1))
                if isinstance(answer, ResultSeen):
                    return OUTCOME.decode(answer.data)
        except TimeoutError:
            return self._timeout(gen)
        except Exception as exc:  # the bus is down or the answer is garbage: say so, typed
            return GenerateError(request_id=gen.id, error=ErrorInfo.of("unavailable", f"orchestra unavailable: {exc}"))
        finally:
            self.inbox.close(gen.id)

    async def _stream(
        self, request: Request, gen: GenerateRequest, *, chat: bool, include_usage: bool, lane: Slot
    ) -> Answer:
        shaper = oa.StreamShaper(gen, chat=chat, include_usage=include_usage)
        queue = self.inbox.open(gen.id)  # chunks, then the outcome, in order
        response: Answer | None = None
        follow = StreamFollower()  # the one generation whose text the client has: only its chunks count
        try:
            await self._publish(gen, lane)
            while True:
                wait = gen.effective_deadline - time.time() + GRACE_S
                try:
                    answer = await next_answer(queue, max(wait, 0.1))
                except TimeoutError:
                    outcome: Outcome = self._timeout(gen)
                else:
                    if isinstance(answer, ChunkSeen):
                        chunk = CHUNK.decode(answer.data)
                        if not follow.accept(chunk):
                            continue  # another attempt's, or the same attempt begun again on a restarted host
                        if response is None:
                            response = await self._open_sse(request, gen)
                        await response.write(shaper.chunk(chunk))
                        continue
                    # the answer whose beginning the client holds, or one typed error: never two glued
                    outcome = follow.outcome(OUTCOME.decode(answer.data))
                if isinstance(outcome, GenerateError) and response is None:
                    return error_response(outcome.error, gen.id)  # nothing sent yet: a normal HTTP error
                if response is None:
                    response = await self._open_sse(request, gen)
                if isinstance(outcome, GenerateResult):
                    await response.write(shaper.finish(outcome, follow.streamed))
                else:
                    await response.write(shaper.error(outcome.error))
                await response.write_eof()
                return response
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            info = ErrorInfo.of("unavailable", f"orchestra unavailable: {exc}")
            if response is None:
                return error_response(info, gen.id)
            await response.write(shaper.error(info))
            return response
        finally:
            self.inbox.close(gen.id)

    async def _open_sse(self, request: Request, gen: GenerateRequest) -> Answer:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Request-Id": gen.id}
        if isinstance(request, LaneRequest):
            return await request.open_stream(headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        return response


def _aiohttp_answer(answer: Answer) -> web.StreamResponse:
    """What an aiohttp route returns: a request aiohttp read never opens a LaneStream."""
    assert isinstance(answer, web.StreamResponse)
    return answer
