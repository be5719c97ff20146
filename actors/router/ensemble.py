"""An ensemble's judgement with the I/O it needs: MiniLM vectors, sandbox runs, then the pure vote.

    embed = cache_embedder(nc, timeout=2.0)            # texts -> vectors, or None (then word overlap)
    winner, consensus = await judge(request, responses, threshold, embed=embed, sandbox=True)
    value, source = confidence_of(outcome, cfg, measured)

Vectors come from the cache's embed service (``orch.svc.cache.embed``), not from a model loaded here:
the cache already holds the offline MiniLM (about 90 MB resident, seconds to load and verify), every
router instance would otherwise hold its own copy, and the router stays a light process that starts
in well under a second. One call per ensemble carries all its answers; without a cache, or when it is
slow, the consensus falls back to word overlap and says so (``method="lexical"`` on each pair).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from nats.aio.client import Client as NATS

from actors.router.sandbox import DEFAULT_LIMITS, Limits, run_candidates
from bus.errors import ServiceCallError
from bus.service import call
from bus.subjects import SVC_CACHE_EMBED
from policy.consensus import code as codecheck
from policy.consensus import vote
from policy.consensus.confidence import ConfidenceSource, confidence
from schemas.cache import EMBED_REPLY, EmbedRequest
from schemas.config.root import OrchestraConfig
from schemas.request import GenerateRequest
from schemas.result import Consensus, GenerateResult, Response

log = logging.getLogger(__name__)
Embed = Callable[[list[str]], Awaitable["list[list[float]] | None"]]
WARN_EVERY = 60.0


def cache_embedder(nc: NATS, *, timeout: float) -> Embed:
    warned = [0.0]

    async def embed(texts: list[str]) -> list[list[float]] | None:
        try:
            try:
                reply = await call(nc, SVC_CACHE_EMBED, EmbedRequest(texts=texts), EMBED_REPLY, timeout=timeout)
            except ServiceCallError as exc:
                if exc.info.code != "bad_request":
                    raise
                # over MiniLM's 255 tokens (dense text such as code): once more with a third of each text
                short = [t[: max(1, len(t) // 3)] for t in texts]
                reply = await call(nc, SVC_CACHE_EMBED, EmbedRequest(texts=short), EMBED_REPLY, timeout=timeout)
        except Exception as exc:  # ServiceCallError, or the connection itself: the vote goes on without
            if time.monotonic() - warned[0] > WARN_EVERY:
                warned[0] = time.monotonic()
                log.warning("ensemble consensus without embeddings (word overlap): %s", exc)
            return None
        return reply.vectors if len(reply.vectors) == len(texts) else None

    return embed


def prompt_text(request: GenerateRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return "\n".join(m.content for m in request.messages or [] if m.role in ("user", "system"))


async def _behaviours(texts: list[str], examples: list[str], limits: Limits) -> list[list[str] | None]:
    codes = [codecheck.code_of(t) for t in texts]
    runnable = [i for i, c in enumerate(codes) if c is not None]
    out: list[list[str] | None] = [None] * len(texts)
    if not examples or len(runnable) < 2:
        return out
    try:
        runs = await run_candidates([codes[i] or "" for i in runnable], examples, limits)
    except OSError as exc:  # no process could start (fd or process limits): judged without behaviour
        log.warning("ensemble sandbox unavailable, code judged by AST only: %s", exc)
        return out
    for i, run in zip(runnable, runs, strict=True):
        out[i] = run.results
    return out


async def judge(
    request: GenerateRequest,
    responses: Sequence[Response],
    threshold: float,
    *,
    embed: Embed | None,
    sandbox: bool,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[int, Consensus]:
    try:
        texts = [r.text for r in responses]
        vectors = await embed([vote.embed_text(t) or " " for t in texts]) if embed is not None else None
        examples = codecheck.examples_of(prompt_text(request)) if sandbox else []
        behaviours = await _behaviours(texts, examples, limits)
        cands = [
            vote.candidate(t, vector=vectors[i] if vectors else None, behaviour=behaviours[i])
            for i, t in enumerate(texts)
        ]
        weights = [r.confidence if r.confidence is not None else 0.5 for r in responses]
        return vote.consensus(cands, weights, threshold, examples, prompt=prompt_text(request))
    except Exception:  # a bug in judging must not lose the answer: it goes out, escalated for review
        log.exception("ensemble %s could not be judged; escalating it", request.id)
        return 0, Consensus(consistency=0.0, threshold=threshold, escalated=True)


def confidence_of(
    outcome: GenerateResult, cfg: OrchestraConfig, measured: Mapping[str, float]
) -> tuple[float, ConfidenceSource]:
    """Token logprobs when the answer carries them, else the model's measured accuracy when one exists,
    else its configured quality rank (labelled as such)."""
    spec = cfg.models.get(outcome.model)
    return confidence(outcome.logprobs, measured.get(outcome.model), spec.quality if spec is not None else None)
