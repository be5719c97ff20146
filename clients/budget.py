"""The router's side of a reservation: ``BudgetClient(actor).reserve`` is the router's ``Flow.reserve``
hook (``(request, target, attempt) -> (reservation id, nanos held) | ErrorInfo | None``).

It holds the attempt's worst case until the request's deadline: an upper bound on its input tokens
(``policy.pricing.max_input_tokens``: the UTF-8 bytes of the text + chat-template overhead) x input
price + ``sampling.max_tokens`` x output price. ``max_tokens`` is always set (a default when the client
gave none) and is what the provider is sent; providers honour it (Gemini 2.5 counts its thinking tokens
against ``maxOutputTokens``), so the hold covers what the attempt can cost. A denial becomes the typed
error the router falls back on: ``budget_exceeded`` (a hard cap, named) or ``unavailable`` (tier
disabled, ledger unwritable).

Leases (``budgets.leases``, on by default): per (tier, provider, model, client key) the router holds
one lease from the budget_guard and draws each attempt's worst case from it locally, without a round
trip (``leases.py`` decides). Only one lease request per key is in flight; attempts of that key wait
for it. A denied lease falls back to a reservation of this attempt alone, exactly as without leases;
a per-attempt denial by a hard cap first retires this router's leases that count in that cap (their
undrawn remainders go back) and asks once more. Leases are retired (the undrawn remainder released)
out of their window, when idle, when replaced, and when the router stops.

When no budget_guard answers, ``budgets.require_reservation`` decides: refuse the paid attempt
(``unavailable``: the router falls back), or let it go ahead unreserved (its cost is still charged
when the result is stored). Draws from a lease granted earlier go on while the guard is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from bus import subjects
from bus.actor import Actor
from bus.errors import ServiceCallError
from policy.leases import Ask, Key, Lease, LeaseBook, LeasePolicy
from policy.money import NANOS, to_nanos
from policy.pricing import max_input_tokens, worst_case_cost
from schemas.budget import RELEASE_REPLY, RESERVE_REPLY, ReleaseRequest, ReserveReply, ReserveRequest
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest

log = logging.getLogger(__name__)

RESERVE_TIMEOUT = 2.0
RELEASE_TIMEOUT = 2.0
WARN_EVERY = 60.0
SWEEP_EVERY = 1.0
ASKS_PER_ATTEMPT = 3  # lease requests an attempt may wait for before it reserves alone

Held = tuple[str, int]  # (reservation id, nano-dollars held for the attempt)


def _nanos(usd: float | None) -> int | None:
    return None if usd is None else to_nanos(usd)


class BudgetClient:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self._warned = 0.0
        cfg = actor.cfg.budgets.leases
        tag = re.sub(r"[^A-Za-z0-9_-]", "_", actor.instance)[:32]
        self.book = LeaseBook(LeasePolicy.of(cfg), f"lease-{tag}-{secrets.token_hex(4)}") if cfg.enabled else None
        self._asking: dict[Key, asyncio.Future[None]] = {}
        self._releases: set[asyncio.Task[None]] = set()

    def worst_case(self, request: GenerateRequest, target: Target) -> float:
        cfg = self.actor.cfg
        model = cfg.models[target.model]
        tokens = max_input_tokens(request)
        out = request.sampling.max_tokens * request.sampling.n  # n answers: n times the output
        return worst_case_cost(model, tokens, out, cfg.budgets.local_cost)

    async def reserve(self, request: GenerateRequest, target: Target, attempt: int) -> Held | ErrorInfo | None:
        w = to_nanos(self.worst_case(request, target))
        if self.book is not None:
            held = await self._draw((target.tier, target.provider, target.model, request.client_key), w, request)
            if held is not None:
                return held
        return await self._reserve_one(request, target, attempt, w)

    # --- leases ----------------------------------------------------------------------------------
    async def _draw(self, key: Key, w: int, request: GenerateRequest) -> Held | None:
        assert self.book is not None
        deadline = request.effective_deadline
        for _ in range(ASKS_PER_ATTEMPT):
            now = time.time()
            held = self.book.draw(key, w, deadline, now)
            if held is not None:
                return held
            asking = self._asking.get(key)
            if asking is not None:  # one lease request per key in flight: wait for it, then draw
                await asyncio.shield(asking)
                continue
            ask = self.book.ask(key, w, deadline, now)
            if ask is None:
                return None
            asking = self._asking[key] = asyncio.get_running_loop().create_future()
            try:
                await self._ask(key, ask)
            finally:
                del self._asking[key]
                asking.set_result(None)
        return None

    async def _ask(self, key: Key, ask: Ask) -> None:
        assert self.book is not None
        tier, provider, model, client_key = key
        req = ReserveRequest(
            request_id=ask.request_id,
            tier=tier,  # type: ignore[arg-type]
            provider=provider,
            model=model,
            client_key=client_key,
            amount_usd=ask.amount / NANOS,
            deadline=ask.deadline,
            lease=True,
        )
        try:
            reply = await self.actor.call(subjects.SVC_BUDGET_RESERVE, req, RESERVE_REPLY, RESERVE_TIMEOUT)
        except ServiceCallError as exc:
            self.book.denied(key, ask, None, time.time())
            if exc.info.code == "timeout":  # it may still be granted: give it back (nothing was drawn)
                self._in_background(self._release(ask.request_id, None, "lease unanswered"))
            return
        if not reply.granted:
            self.book.denied(key, ask, _nanos(reply.remaining_usd), time.time())
            return
        amount = reply.amount_nanos or to_nanos(reply.amount_usd)
        old = self.book.granted(key, ask, amount, _nanos(reply.remaining_usd), time.time())
        if old is not None:
            self._retire([old])

    def _retire(self, leases: list[Lease]) -> None:
        for lease in leases:
            self._in_background(self._release(lease.id, lease.left, "lease retired"))

    async def _release(self, reservation_id: str, amount: int | None, reason: str) -> None:
        req = ReleaseRequest(reservation_id=reservation_id, reason=reason, amount_nanos=amount)
        try:
            await self.actor.call(subjects.SVC_BUDGET_RELEASE, req, RELEASE_REPLY, RELEASE_TIMEOUT)
        except ServiceCallError as exc:  # it stays held until it expires
            log.info("could not release %s (%s): it is held until it expires", reservation_id, exc.info.code)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def sweep(self) -> None:
        """Retire leases out of their draw window or idle (the router's timer: every SWEEP_EVERY seconds)."""
        if self.book is not None:
            self._retire(self.book.due(time.time()))

    async def close(self, timeout: float = 2.0) -> None:
        """The router stops: give back what its leases hold undrawn."""
        if self.book is not None:
            self._retire(self.book.retire())
        if self._releases:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._releases), timeout=timeout)

    # --- one attempt alone (as without leases) -----------------------------------------------------
    async def _reserve_one(
        self, request: GenerateRequest, target: Target, attempt: int, w: int
    ) -> Held | ErrorInfo | None:
        reserve = ReserveRequest(
            request_id=request.id,
            attempt=attempt,
            tier=target.tier,
            provider=target.provider,
            model=target.model,
            client_key=request.client_key,
            amount_usd=w / NANOS,
            deadline=request.effective_deadline,
        )
        reply = await self._call(reserve, target)
        if isinstance(reply, ReserveReply) and not reply.granted and reply.reason == "budget_exceeded":
            if self.book is not None and reply.scope:
                freed = self.book.retire(reply.scope.rsplit(":", 1)[0])  # "tier:premium:daily" -> "tier:premium"
                if freed:  # our own leases hold part of that budget undrawn: give it back, ask again
                    await asyncio.gather(*(self._release(x.id, x.left, "lease retired: cap") for x in freed))
                    reply = await self._call(reserve, target)
        if not isinstance(reply, ReserveReply):
            return reply
        if self.book is not None:
            key = (target.tier, target.provider, target.model, request.client_key)
            self.book.reported(key, _nanos(reply.remaining_usd))
        if reply.granted and reply.reservation_id:
            return reply.reservation_id, reply.amount_nanos or w
        if reply.reason == "budget_exceeded":
            left = f"${reply.remaining_usd:.6f} left" if reply.remaining_usd is not None else "exhausted"
            amount = w / NANOS
            return ErrorInfo.of("budget_exceeded", f"budget {reply.scope}: {left}, this attempt may cost ${amount:.6f}")
        if reply.reason == "tier_disabled":
            return ErrorInfo.of("unavailable", f"tier {target.tier} is disabled")
        return ErrorInfo.of("unavailable", "the budget ledger cannot be written now")

    async def _call(self, reserve: ReserveRequest, target: Target) -> ReserveReply | ErrorInfo | None:
        try:
            return await self.actor.call(subjects.SVC_BUDGET_RESERVE, reserve, RESERVE_REPLY, RESERVE_TIMEOUT)
        except ServiceCallError as exc:
            if self.actor.cfg.budgets.require_reservation:
                return ErrorInfo.of("unavailable", f"no budget reservation for {target.tier}: {exc.info.message}")
            now = time.monotonic()
            if now - self._warned > WARN_EVERY:
                self._warned = now
                log.warning("paid attempts go ahead unreserved: %s (budgets.require_reservation is off)", exc)
            return None
