"""Budget leases end to end (real nats-server; router, budget_guard and cloud_proxy in-process; an
OpenAI-compatible HTTP backend, bench/fake_openai.py, as the paid provider): paid requests draw from
a lease instead of reserving one by one, and near a hard cap the spend never passes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from actors.budget_guard.actor import BudgetGuard
from actors.cloud_proxy.actor import CloudProxy
from actors.router.actor import Router
from bench.fake_openai import make_app
from policy.money import to_nanos
from schemas.budget import LEDGER_ENTRY, Reserved
from schemas.request import ChatMessage, GenerateRequest, Sampling, make_request
from schemas.result import GenerateError, GenerateResult
from tests.support.actors import Actors
from tests.support.budget import settled, summary
from tests.support.client import ask, outcomes_stored
from tests.support.cloud import free_port
from tests.support.wait import eventually

MODEL = "paid/fast"
PRICE = 1000.0  # USD per million tokens, in and out: the backend's 12 + 8 tokens cost $0.02
COST = to_nanos(0.02)


class Paid:
    """A budget_guard, a cloud_proxy in front of the fake backend (a premium provider) and a router
    (started and stopped by ``actors``)."""

    def __init__(self, actors: Actors) -> None:
        self.actors = actors
        self.runner: web.AppRunner | None = None
        self.router: Router

    async def start(self, budgets: dict[str, Any]) -> None:
        port = free_port()
        self.runner = web.AppRunner(make_app(0.0), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        provider = {
            "api": "openai",
            "tier": "premium",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key": {"env": "LEASE_TEST_BACKEND_KEY"},
            "limits": {},
            "concurrency": 128,
        }
        model = {"kind": "cloud", "provider": "paid", "remote_name": "fake", "family": "bench"}
        overrides = {
            "providers": {"paid": provider},
            "models": {MODEL: {**model, "price": {"input": PRICE, "output": PRICE}}},
            "budgets": {"require_reservation": True, **budgets},
            "cache": {"enabled": False},
            "router": {"attempt_timeout": "10s"},
        }
        cfg = self.actors.config(overrides=overrides)
        await self.actors.start(BudgetGuard(cfg))
        await self.actors.start(CloudProxy(cfg))
        self.router = await self.actors.start(Router(cfg, instance="lease-router"))
        await eventually(lambda: self.router.view.providers.data.get("paid"))

    async def stop(self) -> None:
        await self.actors.stop_all()  # before the backend they call goes away
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def paid(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Paid]:
    monkeypatch.setenv("LEASE_TEST_BACKEND_KEY", "sk-fake")
    p = Paid(actors)
    yield p
    await p.stop()


def request(n: int) -> GenerateRequest:
    """Worst case: (the input bound, 7-9 bytes + 72 template tokens, + 32) x $0.001 = ~$0.112, more than
    the $0.02 the backend's answer (12 + 8 tokens) costs."""
    return make_request(
        messages=[ChatMessage(role="user", content=f"hello {n}")],
        model=MODEL,
        timeout_s=30,
        sampling=Sampling(max_tokens=32),
    )


async def reservations(nc: NATS) -> list[Reserved]:
    """Every Reserved entry in LEDGER."""
    js = nc.jetstream()
    info = await js.stream_info("LEDGER")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("LEDGER", seq)
        entry = LEDGER_ENTRY.decode(msg.data or b"")
        if isinstance(entry, Reserved):
            out.append(entry)
    return out


async def test_paid_requests_draw_from_a_few_leases_instead_of_reserving_each(paid: Paid, nc: NATS) -> None:
    """120 paid requests, 16 at a time: a handful of leases (Reserved entries) instead of 120
    reservations; each result settles its draw, so after the last one the guard holds exactly what
    the router has not drawn, and nothing once the router stops (its leases are retired)."""
    await paid.start({"limits": []})
    sem = asyncio.Semaphore(16)

    async def one(n: int) -> object:
        async with sem:
            return await ask(nc, request(n))

    outs = await asyncio.gather(*(one(n) for n in range(120)))
    assert all(isinstance(o, GenerateResult) and o.cost_usd == pytest.approx(0.02) for o in outs)
    await eventually(lambda: settled(nc, *(o.request_id for o in outs)))
    leases = await reservations(nc)
    assert 1 <= len(leases) <= 8 and all(r.lease for r in leases)
    state = await summary(nc)
    assert state.charges == 120 and state.spent_nanos == 120 * COST
    book = paid.router.budget.book
    assert book is not None
    undrawn = sum(x.left for x in book.leases())
    assert state.held_nanos == undrawn > 0
    await paid.actors.stop(paid.router, grace=0.5)  # it retires its leases: their undrawn part goes back
    after = await summary(nc)
    assert after.held_nanos == 0 and after.open_reservations == 0 and after.open_leases == 0


async def test_64_concurrent_requests_against_a_tight_cap_never_spend_past_it(paid: Paid, nc: NATS) -> None:
    """A $1.50 daily premium cap, three waves of 64 requests at once (leases sized to draw near the
    cap): every request ends in one outcome, a result or budget_exceeded; the guard never shows spent
    + held over the cap, the charged spend is exactly the results' cost and stays under the cap."""
    cap = 1.50
    limits = [{"scope": "tier", "name": "premium", "period": "daily", "hard_usd": cap}]
    await paid.start({"limits": limits, "leases": {"initial_draws": 4, "min_usd": 0, "fraction": 0.5}})
    watching = True
    worst = 0

    async def watch() -> None:
        nonlocal worst
        while watching:
            state = await summary(nc)
            (limit,) = state.limits
            worst = max(worst, to_nanos(limit.spent_usd) + to_nanos(limit.held_usd))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    outcomes = []
    for wave in range(3):
        reqs = [request(wave * 64 + n) for n in range(64)]
        outcomes += await asyncio.gather(*(ask(nc, r) for r in reqs))
        for r in reqs:
            assert await outcomes_stored(nc, r.id) == 1
        await eventually(lambda: settled(nc))
    watching = False
    await watcher
    results = [o for o in outcomes if isinstance(o, GenerateResult)]
    refused = [o for o in outcomes if isinstance(o, GenerateError)]
    assert len(results) + len(refused) == 3 * 64
    assert all(o.error.code == "budget_exceeded" and "tier:premium:daily" in o.error.message for o in refused)
    # the cap fits 75 answers but only 13 worst cases ($0.112: the input bound of "hello N" is 80 tokens)
    assert len(results) >= 24, "a good part of what fits at once is served, in each wave"
    state = await summary(nc)
    assert state.spent_nanos == len(results) * COST <= to_nanos(cap)
    assert worst <= to_nanos(cap)
    assert any(r.lease for r in await reservations(nc)), "leases were drawn from near the cap too"


async def test_with_leases_off_every_paid_attempt_reserves_alone(paid: Paid, nc: NATS) -> None:
    await paid.start({"leases": {"enabled": False}})
    outs = await asyncio.gather(*(ask(nc, request(n)) for n in range(10)))
    assert all(isinstance(o, GenerateResult) for o in outs)
    await eventually(lambda: settled(nc, *(o.request_id for o in outs)))
    entries = await reservations(nc)
    assert len(entries) == 10 and not any(r.lease for r in entries)
    state = await summary(nc)
    assert state.open_reservations == 0 and state.held_nanos == 0 and state.spent_nanos == 10 * COST
