"""Helpers for budget_guard tests: play the router (reserve / release) and the workers (results)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from actors.budget_guard.charges import charge_of
from bus import subjects
from bus.replay import replay
from bus.service import call
from policy.chargebook import charges_digest
from schemas.budget import (
    LEDGER_SUMMARY,
    RELEASE_REPLY,
    RESERVE_REPLY,
    LedgerSummary,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    SummaryRequest,
)
from schemas.codec import encode
from schemas.errors import ErrorInfo
from schemas.result import AttemptFailed, GenerateResult, Usage

PROVIDER = {"premium": "openai", "together": "together", "local": "cpu0"}
MODEL = {"premium": "gpt-4o", "together": "together/llama3.1-70b", "local": "smollm2-135m"}
CHEAPEST_INPUT_PRICE = 0.88  # $/M input tokens of the cheapest cloud model above (configs/local/models.yaml)


async def reserve(
    nc: NATS,
    request_id: str,
    usd: float,
    *,
    tier: str = "premium",
    attempt: int = 0,
    key: str | None = None,
    deadline: float | None = None,
    timeout: float = 5.0,
    lease: bool = False,
) -> ReserveReply:
    """A reservation for one attempt, or (``lease=True``, ``request_id`` "lease-...") a lease."""
    req = ReserveRequest(
        request_id=request_id,
        attempt=attempt,
        tier=tier,  # type: ignore[arg-type]
        provider=PROVIDER[tier] if tier != "local" else None,
        model=MODEL[tier],
        client_key=key,
        amount_usd=usd,
        deadline=deadline if deadline is not None else time.time() + 60,
        lease=lease,
    )
    return await call(nc, subjects.SVC_BUDGET_RESERVE, req, RESERVE_REPLY, timeout=timeout)


async def release(nc: NATS, reservation_id: str, amount_nanos: int | None = None) -> ReleaseReply:
    req = ReleaseRequest(reservation_id=reservation_id, amount_nanos=amount_nanos)
    return await call(nc, subjects.SVC_BUDGET_RELEASE, req, RELEASE_REPLY)


async def summary(nc: NATS) -> LedgerSummary:
    return await call(nc, subjects.SVC_BUDGET_SUMMARY, SummaryRequest(), LEDGER_SUMMARY, timeout=5.0)


def usage_worth(usd: float, output_tokens: int = 50) -> Usage:
    """Usage whose price is at least ``usd`` for every cloud model of MODEL (the guard charges at most
    the usage's price, so a result's claimed cost is charged exactly when its usage covers it)."""
    return Usage(input_tokens=max(100, math.ceil(usd * 1e6 / CHEAPEST_INPUT_PRICE)), output_tokens=output_tokens)


def result(
    request_id: str,
    usd: float,
    *,
    tier: str = "premium",
    attempt: int = 0,
    key: str | None = None,
    drawn: tuple[str, int] | None = None,
) -> GenerateResult:
    """A worker's result; ``drawn`` = (lease id, nanos) when the attempt drew its worst case from a lease."""
    return GenerateResult(
        request_id=request_id,
        text="ok",
        model=MODEL[tier],
        family="gpt",
        tier=tier,  # type: ignore[arg-type]
        target=PROVIDER[tier],
        usage=usage_worth(usd),
        cost_usd=usd,
        attempt=attempt,
        client_key=key,
        created_at=time.time(),
        reservation_id=drawn[0] if drawn else None,
        reserved_nanos=drawn[1] if drawn else 0,
    )


def failure(
    request_id: str, usd: float, *, tier: str = "premium", attempt: int = 0, drawn: tuple[str, int] | None = None
) -> AttemptFailed:
    return AttemptFailed(
        request_id=request_id,
        attempt=attempt,
        target=PROVIDER[tier],
        model=MODEL[tier],
        tier=tier,  # type: ignore[arg-type]
        error=ErrorInfo.of("provider_error", "upstream 502"),
        usage=usage_worth(usd, output_tokens=0),
        cost_usd=usd,
        created_at=time.time(),
        reservation_id=drawn[0] if drawn else None,
        reserved_nanos=drawn[1] if drawn else 0,
    )


async def publish_result(nc: NATS, res: GenerateResult, *, msg_id: str | None = None) -> None:
    """As a worker does (Msg-Id = request id); ``msg_id`` overrides it (a copy stored twice)."""
    headers = {"Nats-Msg-Id": msg_id or res.request_id}
    await nc.jetstream().publish(subjects.result(res.request_id), encode(res), headers=headers)


async def publish_failure(nc: NATS, f: AttemptFailed, *, msg_id: str | None = None) -> None:
    headers = {"Nats-Msg-Id": msg_id or f"{f.request_id}:{f.attempt}:failed"}
    await nc.jetstream().publish(subjects.attempt_failed(f.request_id), encode(f), headers=headers)


async def settled(nc: NATS, *request_ids: str, durable: str = "budget_guard") -> bool:
    """The guard's RESULTS consumer has handled everything stored, and the final results of the named
    requests are among it. A client can hear a result before the stream has stored it, so a test that
    got its answers from the bus names their requests: "nothing pending" alone can come too early."""
    js = nc.jetstream()
    try:
        info = await js.consumer_info("RESULTS", durable)
        for request_id in request_ids:
            stored = await js.get_last_msg("RESULTS", subjects.result(request_id))
            if (stored.seq or 0) > info.ack_floor.stream_seq:
                return False
    except Exception:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def replayed_charges(nc: NATS) -> dict[str, int]:
    """Every stored result charged the way the guard charges it: key -> nano-dollars."""
    records = await replay(nc.jetstream(), [subjects.RESULT_ALL], datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    out: dict[str, int] = {}
    for when, _seq, _stream, subject, data in records:
        c = charge_of(subject, data, when.timestamp())
        out.setdefault(c.key, c.cost_nanos)
    return out


def digest(charges: dict[str, int]) -> str:
    return charges_digest(list(charges.items()))
