"""Per-key policy, pure: which models a client key may be answered by, the shape of request it may ask
(fan-out, deadline), and the shared rate counters (requests and tokens per clock minute, requests in
flight) as a fold over :class:`schemas.state.KeyUsage`.

Used where each decision is made: the router filters every candidate model through :func:`may_use` (so
``auto``, families, routes, ``diverse`` and ``ensemble`` never reach a model the key may not use) and
checks :func:`shape_error`; the gateway counts rates with :func:`admit` / :func:`release` on a KV entry
shared by all its instances. Keys come from ``gateway.api_keys`` (id, models, limits); other keys (the
key file, bus clients) get ``gateway.key_limits`` and every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from schemas.config.actors import KeyLimits
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest
from schemas.state import KeyUsage

STALE_S = 900.0  # a gateway instance silent this long is gone: its in-flight count no longer counts


@dataclass(frozen=True)
class KeyPolicy:
    models: frozenset[str]  # empty: every model
    limits: KeyLimits


def policy_for(cfg: OrchestraConfig, key_id: str | None) -> KeyPolicy:
    for key in cfg.gateway.api_keys:
        if key.id == key_id:
            return KeyPolicy(frozenset(key.models), key.limits or cfg.gateway.key_limits)
    return KeyPolicy(frozenset(), cfg.gateway.key_limits)


def may_use(policy: KeyPolicy, model: str) -> bool:
    return not policy.models or model in policy.models


def fanout_of(request: GenerateRequest, cfg: OrchestraConfig) -> int:
    """How many answers a request asks for (its models, for an ensemble)."""
    if request.mode == "single":
        return 1
    default = cfg.router.diverse.fanout if request.mode == "diverse" else cfg.router.ensemble.size
    return request.requirements.fanout or default


def shape_error(policy: KeyPolicy, request: GenerateRequest, cfg: OrchestraConfig) -> ErrorInfo | None:
    """A request asking more fan-out or a longer deadline than its key allows."""
    limits = policy.limits
    if limits.max_fanout is not None and request.mode != "single":
        fanout = fanout_of(request, cfg)
        if fanout > limits.max_fanout:
            return ErrorInfo.of(
                "forbidden", f"a fan-out of {fanout} exceeds this key's limit of {limits.max_fanout}", field="n"
            )
    if limits.max_timeout is not None and request.created_at and request.deadline:
        asked = request.deadline - request.created_at
        if asked > float(limits.max_timeout) + 1e-6:
            return ErrorInfo.of(
                "forbidden",
                f"a deadline of {asked:.0f}s exceeds this key's limit of {float(limits.max_timeout):.0f}s",
                field="orchestra.timeout_s",
            )
    return None


def largest_context(policy: KeyPolicy, cfg: OrchestraConfig) -> int:
    """The longest context of any model this key may use (0: none)."""
    return max((m.context_length for name, m in cfg.models.items() if may_use(policy, name)), default=0)


def context_error(request: GenerateRequest, largest: int) -> ErrorInfo | None:
    """A prompt that no model of the key could take (:func:`largest_context`), by the router's own estimate
    and rule: refused where it arrives, before it costs the bus, the router and the cache anything. The
    text is measured, never scanned."""
    prompt_tokens = max(1, math.ceil(prompt_chars(request) / 3))  # actors.pricing.estimate_tokens' rule
    if largest <= 0 or prompt_tokens + request.sampling.max_tokens <= largest:
        return None
    return ErrorInfo.of(
        "context_too_long",
        f"about {prompt_tokens} prompt tokens + max_tokens {request.sampling.max_tokens} exceed the largest "
        f"context ({largest} tokens) of the models this request may use",
        field="messages" if request.messages is not None else "prompt",
    )


def prompt_chars(request: GenerateRequest) -> int:
    """``len(request.prompt_text())`` without building the text (on every request's path)."""
    if request.prompt is not None:
        return len(request.prompt)
    messages = request.messages or ()
    return sum(len(m.role) + 2 + len(m.content) for m in messages) + max(0, len(messages) - 1)


def _current(usage: KeyUsage, now: float) -> KeyUsage:
    """The counters of this minute (a new minute starts at zero) without gateway instances gone silent."""
    minute = int(now // 60)
    live = {i: t for i, t in usage.seen.items() if now - t < STALE_S}
    inflight = {i: n for i, n in usage.inflight.items() if i in live and n > 0}
    if minute != usage.minute:
        return KeyUsage(minute=minute, inflight=inflight, seen=live)
    return msgspec.structs.replace(usage, inflight=inflight, seen=live)


def at_rate_limit(usage: KeyUsage | None, limits: KeyLimits, *, now: float) -> bool:
    """Whether this minute's request or token count is what refuses the key (not its requests in flight,
    which a release frees at any moment): such a refusal holds until the minute ends."""
    cur = _current(usage or KeyUsage(), now)
    busy = limits.concurrent is not None and sum(cur.inflight.values()) >= limits.concurrent
    return not busy


def admit(
    usage: KeyUsage | None, limits: KeyLimits, *, now: float, instance: str, tokens: int
) -> tuple[KeyUsage, ErrorInfo | None]:
    """Count one more request of ``tokens`` (estimated) in flight on ``instance``, or the 429 why not
    (then the usage is returned unchanged)."""
    cur = _current(usage or KeyUsage(), now)
    retry = 60.0 - (now % 60)
    if limits.concurrent is not None and sum(cur.inflight.values()) >= limits.concurrent:
        return cur, ErrorInfo.of(
            "rate_limited", f"this key has {limits.concurrent} requests in flight, its limit", retry_after_s=1.0
        )
    if limits.rpm is not None and cur.requests >= limits.rpm:
        return cur, ErrorInfo.of(
            "rate_limited", f"this key's limit of {limits.rpm} requests per minute is reached", retry_after_s=retry
        )
    if limits.tokens_per_min is not None and cur.tokens + tokens > limits.tokens_per_min:
        what = (
            f"a request of about {tokens} tokens exceeds"
            if tokens > limits.tokens_per_min
            else f"{cur.tokens} tokens used this minute, {tokens} more would exceed"
        )
        return cur, ErrorInfo.of(
            "rate_limited",
            f"{what} this key's limit of {limits.tokens_per_min} tokens per minute",
            retry_after_s=retry if tokens <= limits.tokens_per_min else None,
        )
    inflight = {**cur.inflight, instance: cur.inflight.get(instance, 0) + 1}
    seen = {**cur.seen, instance: now}
    counted = msgspec.structs.replace(
        cur, requests=cur.requests + 1, tokens=cur.tokens + tokens, inflight=inflight, seen=seen
    )
    return counted, None


def release(usage: KeyUsage | None, *, now: float, instance: str, estimated: int, used: int | None) -> KeyUsage:
    """One request of ``instance`` is over: out of flight, its tokens settled on what it used (within the
    minute it was counted in; a later minute started from zero anyway)."""
    minute = (usage or KeyUsage()).minute
    cur = _current(usage or KeyUsage(), now)
    inflight = {**cur.inflight, instance: max(0, cur.inflight.get(instance, 0) - 1)}
    tokens = cur.tokens
    if used is not None and cur.minute == minute:
        tokens = max(0, tokens + used - estimated)
    return msgspec.structs.replace(cur, tokens=tokens, inflight=inflight, seen={**cur.seen, instance: now})


def estimate(request: GenerateRequest, cfg: OrchestraConfig) -> int:
    """Tokens a request may use: its prompt (~3 characters a token) and max_tokens, per answer."""
    answers = fanout_of(request, cfg)
    prompt = math.ceil(len(request.prompt_text()) / 3)
    return answers * (prompt + request.sampling.max_tokens)
