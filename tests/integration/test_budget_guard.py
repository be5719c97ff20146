"""The budget_guard against a real nats-server (in-process actor, real service calls, real streams):
reservations under concurrency, settlement, idempotency, thresholds, tiers, the spike, rebuild."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from actors.budget_guard import journal
from actors.budget_guard.actor import BudgetGuard
from bus import subjects
from bus.kv import TypedKV
from policy.limits import Calendar
from policy.money import to_nanos
from schemas.budget import Charged
from schemas.codec import COMMAND, Codec
from schemas.commands import SetTier
from schemas.events import BudgetThreshold, CostSpike, TierDisabled, TierEnabled
from schemas.state import TierState
from tests.support.actors import Actors
from tests.support.budget import (
    failure,
    publish_failure,
    publish_result,
    release,
    replayed_charges,
    reserve,
    result,
    settled,
    summary,
)
from tests.support.events import Recorder
from tests.support.procs import REPO
from tests.support.wait import eventually

StartGuard = Callable[..., Awaitable[BudgetGuard]]


@pytest.fixture
def start_guard(actors: Actors) -> StartGuard:
    """Start an in-process budget_guard with ``budgets`` overrides (stopped by ``actors``)."""

    async def start(budgets: dict[str, Any] | None = None) -> BudgetGuard:
        return await actors.start(BudgetGuard(actors.config(overrides={"budgets": budgets or {}})))

    return start


async def ledger_count(nc: NATS, kind: str) -> int:
    info = await nc.jetstream().stream_info("LEDGER", subjects_filter=f"orch.ledger.{kind}")
    return (info.state.subjects or {}).get(f"orch.ledger.{kind}", 0)


def premium_cap(hard: float, period: str = "daily", soft: list[float] | None = None) -> dict[str, Any]:
    limit: dict[str, Any] = {"scope": "tier", "name": "premium", "period": period, "hard_usd": hard}
    limit["soft"] = soft or [0.8]
    return {"limits": [limit]}


async def test_64_concurrent_reservations_racing_one_budget_never_overshoot_it(
    start_guard: StartGuard, nc: NATS
) -> None:
    """64 reservations of $0.01-0.10 at once against a $1.00 cap: what is granted sums to at most
    $1.00, and every denied one would have passed it (no budget is wasted either)."""
    await start_guard(premium_cap(1.00))
    rng = random.Random(7)
    amounts = [round(rng.uniform(0.01, 0.10), 4) for _ in range(64)]
    replies = await asyncio.gather(*(reserve(nc, f"race{i}", usd) for i, usd in enumerate(amounts)))
    granted = [to_nanos(a) for a, r in zip(amounts, replies, strict=True) if r.granted]
    denied = [(a, r) for a, r in zip(amounts, replies, strict=True) if not r.granted]
    assert sum(granted) <= to_nanos(1.00)
    assert denied, "the amounts sum to more than the cap, some must be denied"
    for usd, reply in denied:
        assert reply.reason == "budget_exceeded" and reply.scope == "tier:premium:daily"
        assert sum(granted) + to_nanos(usd) > to_nanos(1.00)
    state = await summary(nc)
    assert state.held_nanos == sum(granted) and state.open_reservations == len(granted)
    assert await ledger_count(nc, "reserved") == len(granted)  # every hold is on the bus


async def test_a_result_delivered_twice_is_charged_once(start_guard: StartGuard, nc: NATS) -> None:
    """The same result and the same failed attempt each stored twice (e.g. a worker retry after the
    dedupe window): one charge each; the hold of the attempt is settled by the actual cost."""
    await start_guard(premium_cap(5.00))
    first = await reserve(nc, "dup1", 0.50)
    assert first.granted
    res = result("dup1", 0.0123)
    fail = failure("dup1", 0.002, attempt=1)
    for copy in ("a", "b"):
        await publish_result(nc, res, msg_id=f"dup1-{copy}")
        await publish_failure(nc, fail, msg_id=f"dup1:1:failed-{copy}")
    await eventually(lambda: settled(nc))
    state = await summary(nc)
    assert state.charges == 2 and state.spent_nanos == to_nanos(0.0123) + to_nanos(0.002)
    assert state.open_reservations == 0 and state.held_nanos == 0
    assert await ledger_count(nc, "charged") == 2
    results = await nc.jetstream().stream_info("RESULTS")
    assert results.state.messages == 4


async def test_settlement_frees_the_hold_and_results_without_a_reservation_are_spend(
    start_guard: StartGuard, nc: NATS
) -> None:
    """$0.90 held of $1.00; the answer cost $0.10, so $0.90 more fits afterwards. A local result,
    never reserved, is spend all the same."""
    await start_guard(premium_cap(1.00))
    held = await reserve(nc, "s1", 0.90)
    assert held.granted and held.remaining_usd == pytest.approx(0.10)
    assert not (await reserve(nc, "s2", 0.20)).granted
    await publish_result(nc, result("s1", 0.10))
    await publish_result(nc, result("loc1", 0.000002, tier="local"))
    await eventually(lambda: settled(nc))
    assert (await reserve(nc, "s3", 0.90)).granted
    state = await summary(nc)
    assert state.by_tier == {"premium": to_nanos(0.10), "local": 2000}
    assert state.held_nanos == to_nanos(0.90)


async def test_release_and_expiry_free_the_budget(start_guard: StartGuard, nc: NATS) -> None:
    """A released hold is gone at once; an unsettled hold stops counting after its deadline."""
    await start_guard({**premium_cap(1.00), "reservation_grace": 0})
    a = await reserve(nc, "e1", 0.60, deadline=time.time() + 1.5)
    b = await reserve(nc, "e2", 0.40)
    assert a.granted and b.granted and b.reservation_id
    assert (await release(nc, b.reservation_id)).released
    assert not (await release(nc, b.reservation_id)).released  # nothing left to release
    assert not (await reserve(nc, "e3", 0.50)).granted  # e1 still holds $0.60
    granted = await eventually(lambda: _granted(nc, "e3", 0.50), timeout=10)
    assert granted
    assert await ledger_count(nc, "released") == 1


async def _granted(nc: NATS, rid: str, usd: float) -> bool:
    return (await reserve(nc, rid, usd)).granted


async def ledger_charges(nc: NATS) -> dict[str, Charged]:
    return {e.key: e async for e in journal.read_entries(nc) if isinstance(e, Charged)}


async def test_a_late_answer_of_an_abandoned_attempt_is_charged_against_its_hold(
    start_guard: StartGuard, nc: NATS
) -> None:
    """The router gave up on attempt 0 (attempt timeout) and attempt 1 answered: attempt 0's call went
    on, so its hold stays after the final result and a reservation that would pass the cap with its
    cost is denied; its late answer, stored as a cancelled attempt with its cost, settles that hold."""
    await start_guard(premium_cap(1.00))
    first = await reserve(nc, "late1", 0.40)
    assert first.granted and (await reserve(nc, "late1", 0.40, attempt=1)).granted
    await publish_result(nc, result("late1", 0.30, attempt=1))
    await eventually(lambda: settled(nc))
    state = await summary(nc)
    assert state.held_nanos == to_nanos(0.40) and state.open_reservations == 1
    assert not (await reserve(nc, "other", 0.40)).granted  # $0.30 spent + $0.40 held + $0.40 > $1
    await publish_failure(nc, failure("late1", 0.35, attempt=0))
    await eventually(lambda: settled(nc))
    state = await summary(nc)
    assert state.held_nanos == 0 and state.spent_nanos == to_nanos(0.65)
    charged = await ledger_charges(nc)
    assert charged["late1:0:failed"].reservation_id == first.reservation_id


async def test_a_guard_back_after_the_expiry_charges_the_backlog_against_the_holds(
    start_guard: StartGuard, nc: NATS
) -> None:
    """A result is stored before its hold's expiry while the guard is down; the guard comes back after
    the expiry: the hold does not expire before that result is charged, so it settles the hold (and
    a reservation made as the guard starts never finds the room free)."""
    first = await start_guard({**premium_cap(1.00), "reservation_grace": 0})
    held = await reserve(nc, "down1", 0.60, deadline=time.time() + 1.0)
    assert held.granted
    await first.stop(grace=1)
    await publish_result(nc, result("down1", 0.55))  # stored before the deadline
    await asyncio.sleep(1.5)  # the hold's expiry passes while no guard runs
    await start_guard({**premium_cap(1.00), "reservation_grace": 0})
    early = await reserve(nc, "early", 0.50)
    await eventually(lambda: settled(nc))
    state = await summary(nc)
    assert (await ledger_charges(nc))["down1"].reservation_id == held.reservation_id
    assert state.spent_nanos == to_nanos(0.55)
    assert not early.granted and state.held_nanos == 0


async def test_soft_thresholds_and_the_cap_raise_budget_threshold_events(start_guard: StartGuard, nc: NATS) -> None:
    """Spend past 50% and 80% of a $1 cap raises one event each; a denial at the cap raises a hard one."""
    events = await Recorder.listen(nc, "budget.threshold")
    await start_guard(premium_cap(1.00, soft=[0.5, 0.8]))
    await publish_result(nc, result("t1", 0.55))
    await eventually(lambda: len(events.of(BudgetThreshold)) == 1)
    await publish_result(nc, result("t2", 0.30))
    await publish_result(nc, result("t3", 0.01))
    await eventually(lambda: len(events.of(BudgetThreshold)) == 2)
    denied = await reserve(nc, "t4", 0.50)
    assert not denied.granted
    await eventually(lambda: len(events.of(BudgetThreshold)) == 3)
    soft50, soft80, hard = events.of(BudgetThreshold)
    assert (soft50.scope, soft50.fraction, soft50.hard, soft50.spent_usd) == ("tier:premium:daily", 0.5, False, 0.55)
    assert (soft80.fraction, soft80.hard) == (0.8, False)
    assert hard.hard and hard.limit_usd == 1.0 and hard.source == "budget_guard"
    assert not (await reserve(nc, "t5", 0.50)).granted
    await asyncio.sleep(0.3)
    assert len(events.of(BudgetThreshold)) == 3  # once per period


async def test_when_the_ledger_cannot_be_written_reservations_are_rolled_back_and_denied(
    start_guard: StartGuard, nc: NATS
) -> None:
    """Entries are written ahead of the reply; once one is not confirmed, the guard stores before it
    answers, and denies (rolling the hold back) while the ledger cannot be written. Holds it granted
    stay counted against the cap."""
    await start_guard(premium_cap(1.00))
    assert (await reserve(nc, "w1", 0.30)).granted
    await nc.jetstream().delete_stream("LEDGER")
    first = await reserve(nc, "w2", 0.30)  # written ahead: the loss is noticed after this reply
    denied = await eventually(lambda: _denied(nc), timeout=15, interval=0.2)
    assert denied.reason == "ledger_unavailable"
    state = await summary(nc)
    held = 0.30 + (0.30 if first.granted else 0.0)
    assert state.held_nanos == to_nanos(held)  # rolled-back attempts hold nothing


async def _denied(nc: NATS) -> object:
    reply = await reserve(nc, f"w-{time.monotonic_ns()}", 0.01)
    if not reply.granted:
        return reply
    await release(nc, reply.reservation_id or "")
    return None


async def test_a_restarted_guard_rebuilds_exactly_the_same_ledger(start_guard: StartGuard, nc: NATS) -> None:
    """Holds, charges, releases and notifications, then a new instance: the same ledger, from LEDGER."""
    first = await start_guard(premium_cap(2.00, soft=[0.1]))
    for i in range(6):
        assert (await reserve(nc, f"r{i}", 0.20)).granted
    await publish_result(nc, result("r0", 0.15))
    await publish_failure(nc, failure("r1", 0.01))
    await publish_result(nc, result("r1", 0.05, attempt=1))
    await publish_result(nc, result("loc", 0.000005, tier="local"))
    r5 = await reserve(nc, "r5", 0.20)
    assert r5.reservation_id and (await release(nc, r5.reservation_id)).released
    for n, drawn in enumerate((0.02, 0.03, 0.05)):  # two leases: one drawn from and retired, one open
        lease = f"lease-x-{n % 2}"
        if n < 2:
            assert (await reserve(nc, lease, 0.30, lease=True)).granted
        await publish_result(nc, result(f"l{n}", drawn / 2, drawn=(lease, to_nanos(drawn))))
    # lease-x-0 retired while an attempt that drew $0.04 from it is in flight: $0.04 stays held
    assert (await release(nc, "lease-x-0", to_nanos(0.30 - 0.02 - 0.05 - 0.04))).released
    await eventually(lambda: settled(nc))
    before = await summary(nc)
    await first.stop(grace=1)
    await start_guard(premium_cap(2.00, soft=[0.1]))
    after = await summary(nc)
    assert after.entries_replayed > 0
    for field in ("charges", "spent_nanos", "digest", "open_reservations", "held_nanos", "by_tier", "limits"):
        assert getattr(after, field) == getattr(before, field), field
    assert before.open_reservations == 5 and before.open_leases == after.open_leases == 2 and before.charges == 7
    assert before.held_nanos == to_nanos(3 * 0.20 + 0.04 + 0.30 - 0.03)
    replayed = await replayed_charges(nc)
    assert {k: replayed[k] for k in ("r0", "r1:0:failed", "r1", "loc")} == {
        "r0": to_nanos(0.15),
        "r1:0:failed": 10**7,
        "r1": 5 * 10**7,
        "loc": 5000,
    }


async def test_a_lease_is_drawn_settled_and_retired_over_the_services(start_guard: StartGuard, nc: NATS) -> None:
    """A $0.60 lease under a $1 cap: results of attempts that drew from it settle their draws; the
    router retires it releasing only the undrawn part (once); what was drawn and is not settled yet
    stays held until its result comes. A denied lease raises no cap notification."""
    events = await Recorder.listen(nc, "budget.threshold")
    await start_guard(premium_cap(1.00))
    lease = await reserve(nc, "lease-r-1", 0.60, lease=True)
    assert lease.granted and lease.reservation_id == "lease-r-1" and lease.amount_nanos == to_nanos(0.60)
    assert lease.remaining_usd == pytest.approx(0.40)
    big = await reserve(nc, "lease-r-2", 0.50, lease=True)
    assert not big.granted and big.reason == "budget_exceeded"
    await asyncio.sleep(0.3)
    assert not events.of(BudgetThreshold)  # only real per-request denials announce the cap
    w = to_nanos(0.10)
    await publish_result(nc, result("d1", 0.04, drawn=("lease-r-1", w)))
    await publish_failure(nc, failure("d2", 0.01, drawn=("lease-r-1", w)))
    await eventually(lambda: settled(nc))
    assert (await summary(nc)).held_nanos == to_nanos(0.40)  # $0.60 - two draws of $0.10
    retired = await release(nc, "lease-r-1", to_nanos(0.30))  # $0.10 more was drawn, for d3
    assert retired.released and retired.amount_usd == pytest.approx(0.30)
    assert not (await release(nc, "lease-r-1", to_nanos(0.10))).released  # retired once
    state = await summary(nc)
    assert state.held_nanos == w and state.open_leases == 1
    await publish_result(nc, result("d3", 0.07, drawn=("lease-r-1", w)))
    await eventually(lambda: settled(nc))
    state = await summary(nc)
    assert state.held_nanos == 0 and state.open_reservations == 0 and state.open_leases == 0
    assert state.spent_nanos == to_nanos(0.12)
    assert await ledger_count(nc, "reserved") == 1 and await ledger_count(nc, "released") == 1


async def test_a_second_instance_stands_by_until_the_first_stops(start_guard: StartGuard, nc: NATS) -> None:
    """Two guards: the second waits for the writer lease while the first serves, and takes over the
    moment the first stops (its lease released), with the first one's holds rebuilt from LEDGER."""
    first = await start_guard(premium_cap(5.00))
    second = asyncio.ensure_future(start_guard(premium_cap(5.00)))
    assert (await reserve(nc, "lease1", 0.40)).granted
    assert not second.done() and first.lease is not None and first.lease.held
    await first.stop(grace=1)  # releases the lease
    taken_over = await asyncio.wait_for(second, 20)
    assert taken_over is not first and taken_over.lease is not None and taken_over.lease.held
    state = await summary(nc)  # now answered by the second one (the first stopped its services)
    assert state.held_nanos == to_nanos(0.40) and state.open_reservations == 1  # the first one's hold


def orchestra(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cli = str(Path(sys.executable).parent / "orchestra")
    return subprocess.run([cli, "--config", str(profile), *args], cwd=REPO, capture_output=True, text=True, timeout=60)


async def tier_state(nc: NATS, tier: str) -> TierState | None:
    kv: TypedKV[TierState] = await TypedKV.open(nc.jetstream(), subjects.KV_TIERS, Codec(TierState))
    return await kv.get(tier)


async def tier_commands(nc: NATS) -> list[SetTier]:
    js = nc.jetstream()
    info = await js.stream_info("COMMANDS")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        cmd = COMMAND.decode((await js.get_msg("COMMANDS", seq)).data)
        if isinstance(cmd, SetTier):
            out.append(cmd)
    return out


async def test_a_cost_spike_disables_premium_until_tomorrow_and_an_operator_enables_it(
    start_guard: StartGuard, nc: NATS, tmp_path: Path
) -> None:
    """Daily API spend over the limit: cost.spike, a SetTier(premium, off, until next midnight) command,
    orch_tiers says disabled, tier.disabled; premium reservations are denied. `orchestra tier enable
    premium` brings it back (tier.enabled) and the spike does not fire again that day."""
    events = await Recorder.listen(nc, "cost.spike", "tier.disabled", "tier.enabled")
    guard = await start_guard({"spike": {"daily_usd": 0.50, "velocity_usd_per_hour": None}})
    await publish_result(nc, result("sp1", 0.30))
    await publish_result(nc, result("sp2", 0.10, tier="together"))
    await eventually(lambda: settled(nc))
    assert not events.of(CostSpike)
    await publish_result(nc, result("sp3", 0.11))
    await eventually(lambda: events.of(TierDisabled), timeout=10)
    (spike,) = events.of(CostSpike)
    assert spike.daily_usd == pytest.approx(0.51) and spike.limit_usd == 0.50 and "daily API spend" in spike.reason
    tomorrow = Calendar("UTC").next_day_start(time.time())
    (cmd,) = await tier_commands(nc)
    assert (cmd.tier, cmd.enabled, cmd.until, cmd.by) == ("premium", False, tomorrow, "budget_guard")
    state = await tier_state(nc, "premium")
    assert state is not None and not state.enabled and state.until == tomorrow and "cost spike" in state.reason
    (off,) = events.of(TierDisabled)
    assert off.until == tomorrow
    denied = await reserve(nc, "sp4", 0.01)
    assert not denied.granted and denied.reason == "tier_disabled"
    assert (await reserve(nc, "sp5", 0.01, tier="together")).granted
    assert guard.tiers.scheduler.get_job("reenable:premium") is not None  # the schedule for tomorrow

    out = await asyncio.to_thread(orchestra, tmp_path / "profile", "tier", "enable", "premium", "--reason", "ok")
    assert out.returncode == 0, out.stderr
    assert "premium: enabled (ok)" in out.stdout
    await eventually(lambda: events.of(TierEnabled))
    assert (await tier_state(nc, "premium")).enabled  # type: ignore[union-attr]
    assert guard.tiers.scheduler.get_job("reenable:premium") is None
    assert (await reserve(nc, "sp6", 0.01)).granted
    await publish_result(nc, result("sp7", 1.00))
    await eventually(lambda: settled(nc))
    await asyncio.sleep(0.3)
    assert len(events.of(CostSpike)) == 1 and len(events.of(TierDisabled)) == 1


async def test_the_schedule_re_enables_a_tier_at_its_until(start_guard: StartGuard, nc: NATS, tmp_path: Path) -> None:
    """`orchestra tier disable together --until 3s`: disabled now, re-enabled by apscheduler then,
    through a command of its own; every step is an event."""
    events = await Recorder.listen(nc, "tier.disabled", "tier.enabled")
    await start_guard()
    out = await asyncio.to_thread(orchestra, tmp_path / "profile", "tier", "disable", "together", "--until", "3s")
    assert out.returncode == 0, out.stderr
    assert "together: DISABLED until" in out.stdout
    state = await tier_state(nc, "together")
    assert state is not None and not state.enabled and state.until is not None
    assert not (await reserve(nc, "sch1", 0.01, tier="together")).granted
    (enabled,) = await eventually(lambda: events.of(TierEnabled), timeout=15)
    assert "scheduled re-enable" in enabled.reason and enabled.source == "budget_guard"
    assert (await tier_state(nc, "together")).enabled  # type: ignore[union-attr]
    by = [c.by for c in await tier_commands(nc)]
    assert by[0].startswith("operator:") and by[1] == "budget_guard:schedule"
    assert datetime.now(UTC).timestamp() >= state.until
    assert (await reserve(nc, "sch2", 0.01, tier="together")).granted
    status = await asyncio.to_thread(orchestra, tmp_path / "profile", "tier", "status")
    assert "together: enabled" in status.stdout and "premium: enabled" in status.stdout


async def test_cost_report_equals_the_ledger(start_guard: StartGuard, nc: NATS, tmp_path: Path) -> None:
    """`orchestra cost report` replays RESULTS, groups by tier / key, and agrees with the ledger."""
    await start_guard()
    await publish_result(nc, result("cr1", 0.25, key="ci"))
    await publish_result(nc, result("cr2", 0.50, key="researchers"))
    await publish_failure(nc, failure("cr3", 0.05))
    await publish_result(nc, result("cr4", 0.000123, tier="local", key="ci"))
    await eventually(lambda: settled(nc))
    out = await asyncio.to_thread(
        orchestra, tmp_path / "profile", "cost", "report", "--since", "1h", "--by", "tier", "--verify"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    assert lines["premium"][1:4] == ["2", "1", "0"] and lines["premium"][-1] == "$0.800000"
    assert lines["local"][-1] == "$0.000123" and lines["total"][-1] == "$0.800123"
    assert "ledger agrees: 4 charges, $0.800123" in out.stdout
    by_key = await asyncio.to_thread(orchestra, tmp_path / "profile", "cost", "report", "--since", "1h", "--by", "key")
    assert "researchers" in by_key.stdout and "$0.500000" in by_key.stdout
    status = await asyncio.to_thread(orchestra, tmp_path / "profile", "cost", "status")
    assert status.returncode == 0 and "tier:premium:daily" in status.stdout
