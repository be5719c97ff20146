"""The router's side of a reservation: ``BudgetClient(actor).reserve`` is the router's ``Flow.reserve``
hook (``(request, target, attempt) -> reservation id | ErrorInfo | None``).

It reserves the attempt's worst case (prompt tokens, estimated, x input price + ``max_tokens`` x
output price) for the request's deadline and turns a denial into the typed error the router falls back
on: ``budget_exceeded`` (a hard cap, named) or ``unavailable`` (tier disabled, ledger unwritable).
When no budget_guard answers, ``budgets.require_reservation`` decides: refuse the paid attempt
(``unavailable``: the router falls back), or let it go ahead unreserved (its cost is still charged
when the result is stored).
"""

from __future__ import annotations

import logging
import time

from actors.pricing import estimate_tokens, worst_case_cost
from bus import subjects
from bus.actor import Actor
from bus.errors import ServiceCallError
from schemas.budget import RESERVE_REPLY, ReserveRequest
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest

log = logging.getLogger(__name__)

RESERVE_TIMEOUT = 2.0
WARN_EVERY = 60.0


class BudgetClient:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self._warned = 0.0

    def worst_case(self, request: GenerateRequest, target: Target) -> float:
        cfg = self.actor.cfg
        model = cfg.models[target.model]
        tokens = estimate_tokens(request.prompt_text())
        return worst_case_cost(model, tokens, request.sampling.max_tokens, cfg.budgets.local_cost)

    async def reserve(self, request: GenerateRequest, target: Target, attempt: int) -> str | ErrorInfo | None:
        amount = self.worst_case(request, target)
        reserve = ReserveRequest(
            request_id=request.id,
            attempt=attempt,
            tier=target.tier,
            provider=target.provider,
            model=target.model,
            client_key=request.client_key,
            amount_usd=amount,
            deadline=request.effective_deadline,
        )
        try:
            reply = await self.actor.call(subjects.SVC_BUDGET_RESERVE, reserve, RESERVE_REPLY, RESERVE_TIMEOUT)
        except ServiceCallError as exc:
            if self.actor.cfg.budgets.require_reservation:
                return ErrorInfo.of("unavailable", f"no budget reservation for {target.tier}: {exc.info.message}")
            now = time.monotonic()
            if now - self._warned > WARN_EVERY:
                self._warned = now
                log.warning("paid attempts go ahead unreserved: %s (budgets.require_reservation is off)", exc)
            return None
        if reply.granted:
            return reply.reservation_id
        if reply.reason == "budget_exceeded":
            left = f"${reply.remaining_usd:.6f} left" if reply.remaining_usd is not None else "exhausted"
            return ErrorInfo.of("budget_exceeded", f"budget {reply.scope}: {left}, this attempt may cost ${amount:.6f}")
        if reply.reason == "tier_disabled":
            return ErrorInfo.of("unavailable", f"tier {target.tier} is disabled")
        return ErrorInfo.of("unavailable", "the budget ledger cannot be written now")
