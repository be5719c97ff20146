"""Cloud embeddings, the cloud_proxy's service ``orch.svc.cloud.embed``: budgeted like a generation.

    hold   the worst case (an upper bound on the input tokens x the model's price) through the
           budget_guard's ``orch.svc.budget.reserve``: a hard cap, a disabled tier or a ledger that
           cannot be written refuses the call before any money is spent
    call   the provider (OpenAI-compatible ``/embeddings`` or Gemini ``batchEmbedContents``)
    charge a result on ``orch.result.<origin>.<id>`` (empty text, the input tokens, their cost, the
           hold's id): the budget_guard settles it as it settles every stored result, and
           ``orchestra cost report`` replays it from RESULTS like the rest
    release the hold when the call failed (nothing was spent)

No budget_guard answering: ``budgets.require_reservation`` decides (refuse, or call unreserved and
still store the charge). Pure decisions are here as plain functions; the I/O goes through callables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.cloud_proxy.errors import ProviderError
from actors.cloud_proxy.provider import Provider
from bus.errors import ServiceCallError
from bus.log import redact
from policy.money import to_nanos
from schemas.budget import ReleaseRequest, ReserveReply, ReserveRequest
from schemas.cache import EmbedReply
from schemas.config.models import EmbeddingModel
from schemas.config.root import OrchestraConfig
from schemas.embeddings import CloudEmbedRequest
from schemas.errors import ErrorInfo
from schemas.result import GenerateResult, Provenance, Usage

log = logging.getLogger(__name__)

Reserve = Callable[[ReserveRequest], Awaitable[ReserveReply]]
Release = Callable[[ReleaseRequest], Awaitable[Any]]
Store = Callable[[GenerateResult, str], Awaitable[Any]]
DEFAULT_TIMEOUT_S = 30.0


def worst_case_usd(model: EmbeddingModel, texts: list[str]) -> float:
    """An upper bound: no tokenizer makes more tokens than UTF-8 bytes (+2 for special tokens)."""
    tokens = sum(len(t.encode()) + 2 for t in texts)
    return tokens * model.price / 1e6


def cost_usd(model: EmbeddingModel, tokens: int) -> float:
    return tokens * model.price / 1e6


def denial(reply: ReserveReply) -> ErrorInfo:
    """The client's error for a refused hold."""
    if reply.reason == "budget_exceeded":
        return ErrorInfo.of("budget_exceeded", f"budget exhausted ({reply.scope or 'a hard limit'})")
    return ErrorInfo.of("unavailable", f"the budget guard refused the hold: {reply.reason or 'denied'}")


async def embed(
    req: CloudEmbedRequest,
    *,
    cfg: OrchestraConfig,
    providers: dict[str, Provider],
    reserve: Reserve,
    release: Release,
    store: Store,
) -> EmbedReply:
    model = cfg.embedding_models.get(req.model)
    provider = providers.get(model.provider) if model is not None else None
    if model is None or provider is None:
        raise ServiceCallError(ErrorInfo.of("not_found", f"no cloud embedding model {req.model!r} here"))
    deadline = req.deadline or time.time() + DEFAULT_TIMEOUT_S
    ask = ReserveRequest(
        request_id=req.request_id,
        tier=provider.cfg.tier,
        provider=provider.name,
        model=req.model,
        client_key=req.client_key,
        amount_usd=worst_case_usd(model, req.texts),
        deadline=deadline,
    )
    held: ReserveReply | None
    try:
        held = await reserve(ask)
    except ServiceCallError as exc:
        if cfg.budgets.require_reservation:
            raise ServiceCallError(ErrorInfo.of("unavailable", f"no budget hold possible: {exc.info.code}")) from exc
        held = None
    if held is not None and not held.granted:
        raise ServiceCallError(denial(held))
    rid = held.reservation_id if held is not None else None
    try:
        vectors, tokens = await provider.embed(model.remote_name, req.texts, req.dimensions, deadline)
    except ProviderError as err:
        if rid is not None:
            await release(ReleaseRequest(reservation_id=rid, reason=f"embeddings failed: {err.code}"))
        raise ServiceCallError(err.to_info(redact)) from err
    result = charge(req, model, provider, tokens, held)
    await store(result, req.origin)
    return EmbedReply(vectors=vectors, tokens=tokens)


def charge(
    req: CloudEmbedRequest, model: EmbeddingModel, provider: Provider, tokens: int, held: ReserveReply | None
) -> GenerateResult:
    """The stored result the budget_guard charges (it caps the cost by the hold, as for any result)."""
    now = time.time()
    usage = Usage(input_tokens=tokens)
    tier = provider.cfg.tier
    return GenerateResult(
        request_id=req.request_id,
        text="",
        model=req.model,
        family="embedding",
        tier=tier,
        target=provider.name,
        usage=usage,
        cost_usd=cost_usd(model, tokens),
        provenance=Provenance(model=req.model, family="embedding", tier=tier, target=provider.name),
        client_key=req.client_key,
        task="embeddings",
        created_at=now,
        reservation_id=held.reservation_id if held is not None else None,
        reserved_nanos=(held.amount_nanos or to_nanos(held.amount_usd)) if held is not None else 0,
    )
