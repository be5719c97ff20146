"""What one stored RESULTS message costs (pure). The ledger and ``orchestra cost report`` both use
this, so a report replayed from RESULTS and the ledger agree by construction.

    orch.result.<origin>.<id>          GenerateResult  -> Charged(key=<id>, outcome="result", cost_usd)
                              (a fan-out parent, i.e. with ``responses``: outcome="aggregate", cost 0:
                              its children were charged from their own results, which carry parent_id)
                              GenerateError   -> Charged(key=<id>, outcome="error", cost 0)
    orch.result.<origin>.<id>.failed   AttemptFailed   -> Charged(key=<id>:<attempt>:failed, outcome="failed", cost_usd)

The key is the message's own Msg-Id (docs/protocol.md), so a redelivered message is charged once.
The charge names the hold the worker was given (``reservation_id``, ``reserved_nanos`` from the
Dispatch); the ledger decides what it settles (``Ledger.settles``).
The charge time is the result's ``created_at``, or the time it was stored when that is missing.
"""

from __future__ import annotations

import math

import msgspec

from bus import subjects
from policy.money import to_nanos
from policy.pricing import cloud_cost
from schemas.budget import Charged
from schemas.codec import ATTEMPT_FAILED, OUTCOME
from schemas.config.models import CloudModel, LocalModel
from schemas.errors import SchemaError
from schemas.result import GenerateError, GenerateResult, Usage


def provider_of(tier: str, target: str, cached: bool = False) -> str:
    """Who was paid: the cloud provider (a cloud result's target), ``local`` or ``cache``."""
    if cached:
        return "cache"
    return "local" if tier == "local" else target


def _nanos(cost_usd: float) -> int:
    if not math.isfinite(cost_usd):
        raise SchemaError("must be a finite number", field="cost_usd")
    return max(0, to_nanos(cost_usd))


def charge_of(subject: str, data: bytes, stored_at: float) -> Charged:
    """The charge of a RESULTS message. Raises SchemaError for anything that is not one."""
    where = subjects.parse_answer(subject)
    if where is None or where.kind == "stream":
        raise SchemaError(f"not a result subject: {subject}")
    if where.kind == "failed":
        f = ATTEMPT_FAILED.decode(data)
        return Charged(
            at=f.created_at or stored_at,
            key=f"{f.request_id}:{f.attempt}:failed",
            outcome="failed",
            request_id=f.request_id,
            attempt=f.attempt,
            tier=f.tier,
            provider=provider_of(f.tier, f.target),
            model=f.model,
            client_key=f.client_key,
            input_tokens=f.usage.input_tokens,
            output_tokens=f.usage.output_tokens,
            cost_nanos=_nanos(f.cost_usd),
            reservation_id=f.reservation_id,
            reserved_nanos=max(0, f.reserved_nanos),
        )
    outcome = OUTCOME.decode(data)
    match outcome:
        case GenerateResult():
            aggregate = bool(outcome.responses)
            return Charged(
                at=outcome.created_at or stored_at,
                key=outcome.request_id,
                outcome="aggregate" if aggregate else "result",
                request_id=outcome.request_id,
                attempt=outcome.attempt,
                tier=outcome.tier,
                provider=provider_of(outcome.tier, outcome.target, outcome.cached),
                model=outcome.model,
                client_key=outcome.client_key,
                input_tokens=0 if aggregate else outcome.usage.input_tokens,
                output_tokens=0 if aggregate else outcome.usage.output_tokens,
                cost_nanos=0 if aggregate else _nanos(outcome.cost_usd),
                reservation_id=None if aggregate else outcome.reservation_id,
                reserved_nanos=0 if aggregate else max(0, outcome.reserved_nanos),
            )
        case GenerateError():
            return Charged(
                at=outcome.created_at or stored_at,
                key=outcome.request_id,
                outcome="error",
                request_id=outcome.request_id,
                attempt=max(0, outcome.attempts - 1),
            )
    raise SchemaError(f"unexpected outcome on {subject}")  # pragma: no cover - the union is closed


def priced(c: Charged, model: CloudModel | LocalModel | None, hold_nanos: int | None) -> Charged:
    """What the charge may cost: never more than its usage at the configured price of a cloud model (the
    figure a result claims can only lower it: a provider's discount), and never more than the hold it
    settles — a forged or buggy result cannot charge an arbitrary cost. Local and unknown models keep the
    worker's figure (electricity depends on time and watts the guard does not see), capped by the hold.
    Pure."""
    cost = c.cost_nanos
    if isinstance(model, CloudModel):
        usage = Usage(input_tokens=c.input_tokens, output_tokens=c.output_tokens)
        cost = min(cost, _nanos(cloud_cost(model, usage)))
    if hold_nanos is not None and hold_nanos > 0:
        cost = min(cost, hold_nanos)
    return c if cost == c.cost_nanos else msgspec.structs.replace(c, cost_nanos=cost)
