"""The router and the budget_guard together (in-process, real nats-server, a scripted worker): the
router reserves before every paid attempt, a hard cap makes it fall back or answer budget_exceeded,
and a cost spike takes the premium tier away from it."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS

from actors.budget_guard import journal
from actors.budget_guard.actor import BudgetGuard
from actors.router.actor import Router
from schemas.budget import Charged
from schemas.request import ChatMessage, GenerateRequest, Requirements, make_request
from schemas.result import GenerateError, GenerateResult
from tests.support.actors import Actors
from tests.support.budget import publish_result, result, settled, summary
from tests.support.client import ask
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}


class Orchestra:
    """A budget_guard (or none), a scripted worker and a router, in-process, on one profile (stopped by
    ``actors``)."""

    def __init__(self, actors: Actors) -> None:
        self.actors = actors
        self.router: Router
        self.worker: ScriptedWorker

    async def start(self, budgets: dict[str, Any], *, guard: bool = True, **sections: Any) -> ScriptedWorker:
        overrides = {"router": {"attempt_timeout": "2s", "max_attempts": 3}, "budgets": budgets, **sections}
        cfg = self.actors.config(overrides=overrides)
        if guard:
            await self.actors.start(BudgetGuard(cfg))
        self.worker = await self.actors.start(ScriptedWorker(cfg, hosts=LOCAL, providers=["openai", "together"]))
        self.router = await self.actors.start(Router(cfg, instance="test-router"))
        await eventually(lambda: self.router.view.hosts.data and self.router.view.providers.data)
        return self.worker


@pytest.fixture
def orchestra(actors: Actors) -> Orchestra:
    return Orchestra(actors)


def chat(text: str = "hello", **kw: object) -> GenerateRequest:
    return make_request(messages=[ChatMessage(role="user", content=text)], timeout_s=20, **kw)


async def test_the_router_reserves_before_a_paid_attempt_and_the_result_settles_it(
    orchestra: Orchestra, nc: NATS
) -> None:
    """Leases off: a gpt-4o request gets one reservation for its dispatch, settled by its result;
    nothing is left held."""
    worker = await orchestra.start({"leases": {"enabled": False}})
    out = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(out, GenerateResult) and out.model == "gpt-4o"
    await eventually(lambda: settled(nc, out.request_id))
    state = await summary(nc)
    assert state.charges == 1 and state.open_reservations == 0
    assert [s.model for s in worker.seen] == ["gpt-4o"]


async def test_with_leases_the_attempt_draws_from_a_lease_and_its_result_settles_the_draw(
    orchestra: Orchestra, nc: NATS
) -> None:
    """Leases on (the default): the dispatch carries the lease and the attempt's worst case, the
    result settles that draw; the lease holds what is undrawn until the router retires it."""
    worker = await orchestra.start({})
    out = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(out, GenerateResult) and (out.reservation_id or "").startswith("lease-test-router-")
    await eventually(lambda: settled(nc, out.request_id))
    book = orchestra.router.budget.book
    assert book is not None
    (lease,) = book.leases()
    assert lease.id == out.reservation_id and lease.drawn == out.reserved_nanos > 0

    async def draw_settled() -> bool:  # the charge's settlement is applied once its entry is stored
        state = await summary(nc)
        return state.open_leases == 1 and state.held_nanos == lease.left

    await eventually(draw_settled)
    assert [s.model for s in worker.seen] == ["gpt-4o"]


async def test_a_hard_cap_makes_the_router_fall_back_or_answer_budget_exceeded(orchestra: Orchestra, nc: NATS) -> None:
    """Premium capped below one attempt's worst case: `gpt-4o` by name is answered `budget_exceeded`
    naming the budget, never dispatched; a request allowed premium or Together goes to Together."""
    worker = await orchestra.start(
        {"limits": [{"scope": "tier", "name": "premium", "period": "daily", "hard_usd": 0.0001}]}
    )
    refused = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(refused, GenerateError) and refused.error.code == "budget_exceeded"
    assert "tier:premium:daily" in refused.error.message
    fallback = await ask(nc, chat(requirements=Requirements(tiers=["premium", "together"], strategy="quality")))
    assert isinstance(fallback, GenerateResult) and fallback.tier == "together"
    assert "gpt-4o" not in [s.model for s in worker.seen]


async def test_the_late_answer_of_an_attempt_the_router_gave_up_on_settles_its_own_hold(
    orchestra: Orchestra, nc: NATS
) -> None:
    """Leases off. gpt-4o does not answer within the attempt timeout (2 s): the router falls back to
    Together, which answers. The gpt-4o call goes on and ends late (recorded, as the cloud_proxy does,
    as a cancelled attempt with its cost): its hold stays after the final result until that charge
    settles it, so its cost never lands on no hold."""
    all_tiers = {"initial_phase": "phase_3_interactive_feedback"}  # tier policy diverse_all_tiers
    paid = {"paid": {"primary": "gpt-4o", "fallback": ["together/llama3.1-70b"]}}
    worker = await orchestra.start({"leases": {"enabled": False}}, rotator=all_tiers, routes=paid)
    worker.script = {"openai/gpt-4o": ["late:5"]}
    out = await ask(nc, chat(requirements=Requirements(route="paid")))
    assert isinstance(out, GenerateResult) and out.tier == "together" and out.attempt == 1
    await eventually(lambda: settled(nc, out.request_id))
    state = await summary(nc)
    assert state.open_reservations == 1 and state.held_nanos > 0  # attempt 0's, its call still running
    late = await eventually(lambda: _charge(nc, f"{out.request_id}:0:failed"), timeout=10)
    assert late.cost_nanos > 0 and late.reservation_id is not None and late.reservation_id.startswith(out.request_id)
    await eventually(lambda: settled(nc))
    state = await summary(nc)
    assert state.open_reservations == 0 and state.held_nanos == 0
    assert [(s.model, s.attempt) for s in worker.seen] == [("gpt-4o", 0), ("together/llama3.1-70b", 1)]


async def _charge(nc: NATS, key: str) -> Charged | None:
    found = [e async for e in journal.read_entries(nc) if isinstance(e, Charged) and e.key == key]
    return found[0] if found else None


async def test_after_a_cost_spike_the_router_no_longer_uses_premium(orchestra: Orchestra, nc: NATS) -> None:
    """API spend past the spike limit: the guard disables premium in orch_tiers, the router stops
    dispatching to it (its reservations would be denied too)."""
    worker = await orchestra.start({"spike": {"daily_usd": 0.5, "velocity_usd_per_hour": None}})
    assert isinstance(await ask(nc, chat(model="gpt-4o")), GenerateResult)
    await publish_result(nc, result("spend1", 0.6))
    await eventually(lambda: _disabled(nc), timeout=10)
    await eventually(lambda: not orchestra.router.view.tiers.data["premium"].enabled)  # its KV watch saw it
    refused = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(refused, GenerateError) and refused.error.code == "unavailable"
    assert [s.model for s in worker.seen].count("gpt-4o") == 1


async def _disabled(nc: NATS) -> bool:
    return "premium" in (await summary(nc)).disabled_tiers


async def test_without_a_guard_require_reservation_decides(orchestra: Orchestra, nc: NATS) -> None:
    """No budget_guard running and `require_reservation: true`: a paid attempt is refused
    (`unavailable`), and a request that may use local falls back to it."""
    worker = await orchestra.start({"require_reservation": True}, guard=False)
    refused = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(refused, GenerateError) and refused.error.code == "unavailable"
    assert "no budget reservation" in refused.error.message
    assert "gpt-4o" not in [s.model for s in worker.seen]
