"""The ledger state machine with plain data: holds, caps, settlement, expiry, idempotency, rebuild."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.budget_guard.ledger import Ledger
from actors.budget_guard.limits import Calendar, scopes_of
from actors.budget_guard.money import NANOS, fmt_usd, to_nanos
from schemas.budget import Charged, LedgerEntry, Marked, Released, ReserveRequest
from schemas.config.ops import BudgetLimitCfg, BudgetsCfg, SpikeCfg
from schemas.events import BudgetThreshold, CostSpike

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()


def budgets(*limits: BudgetLimitCfg, **kw: object) -> BudgetsCfg:
    return BudgetsCfg(limits=list(limits), **kw)  # type: ignore[arg-type]


def premium_daily(hard: float, soft: list[float] | None = None) -> BudgetLimitCfg:
    return BudgetLimitCfg(scope="tier", name="premium", period="daily", hard_usd=hard, soft=soft or [0.8])


def req(rid: str, usd: float, *, attempt: int = 0, tier: str = "premium", key: str | None = None) -> ReserveRequest:
    return ReserveRequest(
        request_id=rid,
        attempt=attempt,
        tier=tier,  # type: ignore[arg-type]
        provider="openai",
        model="gpt-4o",
        client_key=key,
        amount_usd=usd,
        deadline=T0 + 60,
    )


def result(rid: str, usd: float, *, attempt: int = 0, at: float = T0, reservation: str | None = None) -> Charged:
    return Charged(
        at=at,
        key=rid,
        outcome="result",
        request_id=rid,
        attempt=attempt,
        tier="premium",
        provider="openai",
        model="gpt-4o",
        cost_nanos=to_nanos(usd),
        reservation_id=reservation,
    )


def test_money_is_exact_in_nano_dollars() -> None:
    """Ten charges of $0.1 sum to exactly $1 (floats would not); tiny local costs stay visible."""
    assert sum(to_nanos(0.1) for _ in range(10)) == NANOS
    assert to_nanos(0.0033) == 3_300_000
    assert to_nanos(0.001 / 1e6) == 1  # one local token at $0.001/M
    assert fmt_usd(to_nanos(1234.5)) == "$1,234.50" and fmt_usd(3) == "$0.000000003"
    with pytest.raises(ValueError, match="finite"):
        to_nanos(float("nan"))


def test_reservation_within_the_cap_is_held_and_one_past_it_is_denied_with_its_scope() -> None:
    """$0.40 + $0.40 fit a $1 daily premium cap; the third $0.40 does not, and the reply names the
    limit and what is left under it."""
    ledger = Ledger(budgets(premium_daily(1.0)))
    a = ledger.try_reserve(req("a", 0.40), reservation_id="a:0:x", now=T0)
    b = ledger.try_reserve(req("b", 0.40), reservation_id="b:0:x", now=T0)
    c = ledger.try_reserve(req("c", 0.40), reservation_id="c:0:x", now=T0)
    assert a.granted and b.granted and not c.granted
    assert c.reason == "budget_exceeded" and c.scope == "tier:premium:daily"
    assert c.remaining == to_nanos(0.20)
    assert ledger.held["tier:premium"] == to_nanos(0.80)
    exact = ledger.try_reserve(req("d", 0.20), reservation_id="d:0:x", now=T0)
    assert exact.granted and exact.remaining == 0  # exactly at the cap is allowed


def test_other_tiers_and_keys_are_not_held_against_a_premium_cap() -> None:
    """Scopes: a Together reservation does not count against premium; a key cap counts per key."""
    key_cap = BudgetLimitCfg(scope="key", name="ci", period="daily", hard_usd=0.10)
    ledger = Ledger(budgets(premium_daily(0.5), key_cap))
    assert ledger.try_reserve(req("t", 5.0, tier="together"), reservation_id="t:0:x", now=T0).granted
    denied = ledger.try_reserve(req("k", 0.2, key="ci"), reservation_id="k:0:x", now=T0)
    assert not denied.granted and denied.scope == "key:ci:daily"
    assert ledger.try_reserve(req("k2", 0.2, key="researchers"), reservation_id="k2:0:x", now=T0).granted


def test_reserving_the_same_attempt_again_returns_the_open_reservation() -> None:
    """A router retrying a timed-out reserve call gets the same hold, not a second one."""
    ledger = Ledger(budgets(premium_daily(1.0)))
    first = ledger.try_reserve(req("a", 0.5), reservation_id="a:0:1", now=T0)
    again = ledger.try_reserve(req("a", 0.5), reservation_id="a:0:2", now=T0)
    assert again.granted and again.entry is None and again.reservation == first.reservation
    assert ledger.held["tier:premium"] == to_nanos(0.5)
    assert ledger.try_reserve(req("a", 0.5, attempt=1), reservation_id="a:1:1", now=T0).granted


def test_a_disabled_tier_is_denied() -> None:
    ledger = Ledger(budgets())
    d = ledger.try_reserve(req("a", 0.01), reservation_id="a:0:x", now=T0, disabled_tiers={"premium"})
    assert not d.granted and d.reason == "tier_disabled" and d.scope == "tier:premium"


def test_settlement_charges_the_actual_cost_once_and_frees_the_hold() -> None:
    """The result settles its reservation with the actual cost; applying it again changes nothing."""
    ledger = Ledger(budgets(premium_daily(1.0)))
    ledger.try_reserve(req("a", 0.90), reservation_id="a:0:x", now=T0)
    charge = result("a", 0.25, reservation="a:0:x")
    assert ledger.apply(charge) is True
    assert ledger.apply(charge) is False  # a redelivered result
    assert not ledger.reservations and "tier:premium" not in ledger.held
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.25)
    assert ledger.spent[("total", "2026-11")] == to_nanos(0.25)
    assert ledger.try_reserve(req("b", 0.75), reservation_id="b:0:x", now=T0).granted


def test_a_final_outcome_releases_every_other_hold_of_the_request() -> None:
    """Attempt 0 failed (settled with its partial cost), attempt 1 answered: nothing stays held,
    also a hold for an attempt that never reported."""
    ledger = Ledger(budgets(premium_daily(5.0)))
    for attempt in (0, 1, 2):
        ledger.try_reserve(req("r", 1.0, attempt=attempt), reservation_id=f"r:{attempt}:x", now=T0)
    failed = Charged(
        at=T0,
        key="r:0:failed",
        outcome="failed",
        request_id="r",
        attempt=0,
        tier="premium",
        cost_nanos=to_nanos(0.01),
        reservation_id="r:0:x",
    )
    ledger.apply(failed)
    assert set(ledger.reservations) == {"r:1:x", "r:2:x"}
    ledger.apply(result("r", 0.3, attempt=1, reservation="r:1:x"))
    assert not ledger.reservations and not ledger.held
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.31)


def test_results_without_a_reservation_are_still_spend() -> None:
    """Local results (and cache hits) never reserve; their cost counts all the same."""
    ledger = Ledger(budgets())
    local = Charged(at=T0, key="l", outcome="result", request_id="l", tier="local", model="smollm2", cost_nanos=135)
    ledger.apply(local)
    assert ledger.spent[("total", "2026-11-22")] == 135 and ledger.spent[("tier:local", "2026-11")] == 135
    assert ("api", "2026-11-22") not in ledger.spent  # local spend is not API spend


def test_holds_expire_after_the_deadline_plus_grace() -> None:
    ledger = Ledger(budgets(premium_daily(1.0), reservation_grace=30))  # type: ignore[arg-type]
    ledger.try_reserve(req("a", 1.0), reservation_id="a:0:x", now=T0)  # deadline T0 + 60
    assert not ledger.try_reserve(req("b", 0.5), reservation_id="b:0:x", now=T0 + 89).granted
    assert ledger.try_reserve(req("b", 0.5), reservation_id="b:0:y", now=T0 + 90).granted
    assert set(ledger.reservations) == {"b:0:y"}


def test_daily_and_monthly_windows_follow_the_configured_time_zone() -> None:
    """23:30 and 00:30 in Berlin are two days (one UTC day); the month rolls at local midnight."""
    cal = Calendar("Europe/Berlin")
    late = datetime(2026, 10, 31, 23, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert cal.day_key(late) == "2026-10-31" and cal.day_key(late + 3600) == "2026-11-01"
    assert cal.month_key(late) == "2026-10" and cal.month_key(late + 3600) == "2026-11"
    # the night of the DST change (25 March 2029 in Europe/Berlin) has 23 hours
    before = datetime(2029, 3, 24, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert cal.next_day_start(before) == datetime(2029, 3, 25, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert cal.next_day_start(cal.next_day_start(before)) - cal.next_day_start(before) == 23 * 3600
    assert cal.next_month_start(late) == datetime(2026, 11, 1, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    ledger = Ledger(budgets(premium_daily(1.0), timezone="Europe/Berlin"))
    ledger.apply(result("a", 0.9, at=late))
    assert ledger.try_reserve(req("b", 0.9), reservation_id="b:0:x", now=late + 3600).granted  # a new day


def test_soft_thresholds_and_the_cap_are_announced_once_per_period() -> None:
    ledger = Ledger(budgets(premium_daily(1.0, soft=[0.5, 0.8])))
    ledger.apply(result("a", 0.6))
    due = ledger.due(T0)
    assert [d.key for d in due] == ["soft:tier:premium:daily:2026-11-22:0.5"]
    event = due[0].event
    assert isinstance(event, BudgetThreshold)
    assert (event.scope, event.spent_usd, event.limit_usd, event.fraction, event.hard) == (
        "tier:premium:daily",
        0.6,
        1.0,
        0.5,
        False,
    )
    for d in due:
        ledger.claim(d.key)
    assert ledger.due(T0) == []
    ledger.apply(result("b", 0.5))
    keys = [d.key for d in ledger.due(T0)]
    assert keys == ["soft:tier:premium:daily:2026-11-22:0.8", "cap:tier:premium:daily:2026-11-22"]
    assert ledger.due(T0 + 86400) == []  # a new day, nothing spent yet


def test_spike_fires_over_the_daily_api_spend_and_once_a_day() -> None:
    """The paper's rule: daily API spend over $50 -> a spike (local spend does not count)."""
    ledger = Ledger(budgets(spike=SpikeCfg(daily_usd=50.0)))
    ledger.apply(Charged(at=T0, key="l", outcome="result", request_id="l", tier="local", cost_nanos=to_nanos(80)))
    assert ledger.spike(T0) is None
    ledger.apply(result("a", 50.0))
    assert ledger.spike(T0) is None  # over $50, not at $50
    ledger.apply(result("b", 0.01))
    spike = ledger.spike(T0)
    assert spike is not None and spike.spike and spike.key == "spike:2026-11-22"
    assert isinstance(spike.event, CostSpike) and spike.event.daily_usd == pytest.approx(50.01)
    ledger.apply(Marked(at=T0, key=spike.key))
    assert ledger.spike(T0) is None


def test_spike_fires_on_spend_velocity_over_the_window() -> None:
    """$16 in the last hour with a $15/h velocity limit is a spike long before $50 a day."""
    ledger = Ledger(budgets(spike=SpikeCfg(daily_usd=50.0, velocity_usd_per_hour=15.0, window=3600)))
    ledger.apply(result("old", 10.0, at=T0 - 4000))  # outside the window
    ledger.apply(result("a", 8.0, at=T0 - 600))
    assert ledger.spike(T0) is None
    ledger.apply(result("b", 8.0, at=T0 - 60))
    spike = ledger.spike(T0)
    assert spike is not None and isinstance(spike.event, CostSpike)
    assert spike.event.velocity_usd_per_hour == pytest.approx(16.0) and "velocity" in spike.event.reason


def test_scopes_of_a_cloud_and_a_local_charge() -> None:
    assert scopes_of("premium", "openai", "gpt-4o", "ci") == (
        "total",
        "api",
        "tier:premium",
        "provider:openai",
        "model:gpt-4o",
        "key:ci",
    )
    assert scopes_of("local", "local", "smollm2", None) == ("total", "tier:local", "model:smollm2")


def snapshot(ledger: Ledger) -> tuple[object, ...]:
    return (
        sorted(ledger.reservations.items()),
        sorted((k, v) for k, v in ledger.held.items() if v),
        sorted((k, v) for k, v in ledger.spent.items() if v),
        sorted(ledger.charges.items()),
        sorted(ledger.marks),
        ledger.digest(),
    )


ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "fail", "release", "error", "redeliver"]),
        st.integers(0, 7),  # request
        st.integers(0, 2),  # attempt
        st.integers(1, 40),  # cents
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_rebuilding_from_the_entries_gives_the_same_ledger_and_the_cap_always_holds(
    steps: list[tuple[str, int, int, int]],
) -> None:
    """Any interleaving of reservations, settlements, failures, releases and redeliveries: the ledger
    folded from its stored entries equals the live one, and spent + held never passes the cap while
    actual costs stay within their reservations."""
    cfg = budgets(premium_daily(2.0), BudgetLimitCfg(scope="total", period="monthly", hard_usd=3.0))
    live = Ledger(cfg)
    stored: list[LedgerEntry] = []
    charges: dict[str, Charged] = {}
    for n, (op, r, attempt, cents) in enumerate(steps):
        rid, now = f"r{r}", T0 + n
        if op == "reserve":
            d = live.try_reserve(req(rid, cents / 100, attempt=attempt), reservation_id=f"{rid}:{attempt}:{n}", now=now)
            if d.entry is not None:
                stored.append(d.entry)
        elif op in ("settle", "fail", "error"):
            held = live.open_reservation(rid, attempt)
            cost = 0 if held is None or op == "error" else min(held.amount, cents * NANOS // 100)
            key = {"settle": rid, "fail": f"{rid}:{attempt}:failed", "error": rid}[op]
            outcome = {"settle": "result", "fail": "failed", "error": "error"}[op]
            c = Charged(
                at=now,
                key=key,
                outcome=outcome,  # type: ignore[arg-type]
                request_id=rid,
                attempt=attempt,
                tier="premium",
                provider="openai",
                model="gpt-4o",
                cost_nanos=cost,
                reservation_id=held.id if held else None,
            )
            if live.is_charged(key):
                continue
            charges[key] = c
            stored.append(c)
            live.apply(c)
        elif op == "redeliver" and charges:
            again = sorted(charges)[r % len(charges)]
            assert live.apply(charges[again]) is False
        elif op == "release":
            held = live.open_reservation(rid, attempt)
            if held is not None:
                entry = Released(at=now, reservation_id=held.id)
                stored.append(entry)
                live.apply(entry)
        day = live.spent[("tier:premium", "2026-11-22")] + live.held.get("tier:premium", 0)
        assert day <= to_nanos(2.0)
        assert live.spent[("total", "2026-11")] + live.held.get("total", 0) <= to_nanos(3.0)
    rebuilt = Ledger(cfg)
    for entry in [msgspec.json.decode(msgspec.json.encode(e), type=LedgerEntry) for e in stored]:
        rebuilt.apply(entry)
    assert snapshot(rebuilt) == snapshot(live)
