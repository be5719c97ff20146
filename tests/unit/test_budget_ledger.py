"""The ledger state machine with plain data: holds, caps, settlement, expiry, idempotency, rebuild."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from policy.ledger import Ledger
from policy.limits import Calendar, scopes_of
from policy.money import NANOS, fmt_usd, to_nanos
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


def failed(rid: str, usd: float, *, attempt: int = 0, at: float = T0) -> Charged:
    """An ``AttemptFailed`` as charges.py makes it (also a late answer that lost the race: "cancelled")."""
    return Charged(
        at=at,
        key=f"{rid}:{attempt}:failed",
        outcome="failed",
        request_id=rid,
        attempt=attempt,
        tier="premium",
        provider="openai",
        model="gpt-4o",
        cost_nanos=to_nanos(usd),
    )


def test_a_final_outcome_leaves_the_holds_of_other_attempts_until_their_own_outcome() -> None:
    """Attempt 0 failed (settled with its partial cost); the router gave up on attempt 1 (attempt
    timeout) and attempt 2 answered. Attempt 1's call goes on: its hold stays after the final outcome
    and settles its late answer ($0.65, charged as a cancelled attempt), so a $1 reservation that
    would pass the $2 cap with it is denied in between. Nothing is left held afterwards."""
    ledger = Ledger(budgets(premium_daily(2.0)))
    for attempt, usd in enumerate((0.5, 0.7, 0.6)):
        assert ledger.try_reserve(req("r", usd, attempt=attempt), reservation_id=f"r:{attempt}:x", now=T0).granted
    ledger.apply(ledger.settles(failed("r", 0.01)))
    assert set(ledger.reservations) == {"r:1:x", "r:2:x"}
    ledger.apply(ledger.settles(result("r", 0.3, attempt=2)))
    assert set(ledger.reservations) == {"r:1:x"} and ledger.held["tier:premium"] == to_nanos(0.70)
    assert not ledger.try_reserve(req("other", 1.0), reservation_id="other:0:x", now=T0 + 1).granted
    late = ledger.settles(failed("r", 0.65, attempt=1, at=T0 + 50))
    assert late.reservation_id == "r:1:x"
    ledger.apply(late)
    assert not ledger.reservations and not ledger.held
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.96) <= to_nanos(2.0)


def test_an_attempt_that_never_reports_is_held_until_its_expiry() -> None:
    """A hold whose attempt never reports (its worker died) stays after the request's final outcome,
    until the deadline + grace."""
    ledger = Ledger(budgets(premium_daily(1.0), reservation_grace=30))  # type: ignore[arg-type]
    ledger.try_reserve(req("r", 0.6), reservation_id="r:0:x", now=T0)  # deadline T0 + 60
    ledger.try_reserve(req("r", 0.3, attempt=1), reservation_id="r:1:x", now=T0)
    ledger.apply(ledger.settles(result("r", 0.1, attempt=1)))
    assert not ledger.try_reserve(req("s", 0.4), reservation_id="s:0:x", now=T0 + 89).granted
    assert ledger.try_reserve(req("s", 0.4), reservation_id="s:0:y", now=T0 + 90).granted


def test_holds_wait_for_the_results_stored_before_their_expiry_to_be_charged() -> None:
    """The guard read RESULTS late (it was down): a hold past its expiry does not expire until every
    result stored up to then is charged (``charged_through``), so the late charge still settles it."""
    ledger = Ledger(budgets(premium_daily(1.0), reservation_grace=30))  # type: ignore[arg-type]
    ledger.charged_through = 0.0  # a guard that has read nothing yet
    ledger.try_reserve(req("r", 0.6), reservation_id="r:0:x", now=T0)  # expires at T0 + 90
    assert (
        ledger.expire(T0 + 500) == []
        and not ledger.try_reserve(req("s", 0.6), reservation_id="s:0:x", now=T0 + 500).granted
    )
    ledger.charged_through = T0 + 89  # results stored up to T0 + 89 are charged: a later one may still come
    assert ledger.expire(T0 + 500) == []
    settled = ledger.settles(result("r", 0.5, at=T0 + 59))
    assert settled.reservation_id == "r:0:x"
    ledger.apply(settled)
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.5) and not ledger.held
    ledger.try_reserve(req("t", 0.2), reservation_id="t:0:x", now=T0 + 500)  # expires at T0 + 530
    ledger.charged_through = T0 + 530
    assert [r.id for r in ledger.expire(T0 + 531)] == ["t:0:x"]


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


def test_the_velocity_window_is_summed_per_second_so_it_stays_bounded_at_any_rate() -> None:
    """10 API charges a second for two hours: at most one entry per second of the window, exact sums."""
    ledger = Ledger(budgets(spike=SpikeCfg(daily_usd=1e9, velocity_usd_per_hour=1e9, window=3600)))
    for i in range(2 * 3600 * 10):
        ledger.apply(result(f"v{i}", 0.001, at=T0 + i / 10))
        if i % 5000 == 0:
            ledger.velocity(T0 + i / 10)
    now = T0 + 2 * 3600 - 0.01
    assert ledger.velocity(now) == pytest.approx(3600 * 10 * 0.001, rel=1e-3)
    assert len(ledger._api_recent) <= 3601 and ledger.charges.count == 2 * 3600 * 10


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
        (ledger.charges.count, ledger.charges.nanos, sorted(ledger.charges.by_tier.items())),
        sorted(ledger.charges.export_keys()),
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


# --- leases ----------------------------------------------------------------------------------------
def lease_req(lid: str, usd: float, *, deadline: float = T0 + 60, key: str | None = None) -> ReserveRequest:
    return msgspec.structs.replace(req(lid, usd, key=key), deadline=deadline, lease=True)


def drawn(
    rid: str, usd: float, lease: str, w: float, *, attempt: int = 0, failed: bool = False, at: float = T0
) -> Charged:
    """A result (or failed attempt) of an attempt that drew ``w`` from ``lease``, as charges.py makes it."""
    return Charged(
        at=at,
        key=f"{rid}:{attempt}:failed" if failed else rid,
        outcome="failed" if failed else "result",
        request_id=rid,
        attempt=attempt,
        tier="premium",
        provider="openai",
        model="gpt-4o",
        cost_nanos=to_nanos(usd),
        reservation_id=lease,
        reserved_nanos=to_nanos(w),
    )


def test_a_charge_against_a_lease_frees_its_draw_and_leaves_the_rest_held() -> None:
    """A $1 lease; two attempts drew $0.10 and $0.20. The first answered for $0.05: $0.10 leaves the
    hold ($0.05 spent, $0.05 freed); the failed second cost $0.01: $0.20 leaves it. A final outcome of
    the request does not touch the lease: it belongs to no single request."""
    ledger = Ledger(budgets(premium_daily(2.0)))
    grant = ledger.try_reserve(lease_req("L1", 1.0), reservation_id="L1", now=T0)
    assert grant.granted and grant.entry is not None and grant.entry.lease
    assert ledger.held["tier:premium"] == NANOS
    for c in (drawn("a", 0.05, "L1", 0.10), drawn("b", 0.01, "L1", 0.20, failed=True)):
        settled = ledger.settles(c)
        assert settled.reservation_id == "L1" and settled.reserved_nanos == c.reserved_nanos
        assert ledger.apply(settled) is True
    assert ledger.held["tier:premium"] == to_nanos(0.70)
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.06)
    final = Charged(at=T0, key="b", outcome="error", request_id="b", attempt=1)
    ledger.apply(ledger.settles(final))
    assert set(ledger.reservations) == {"L1"} and ledger.held["tier:premium"] == to_nanos(0.70)
    assert ledger.summary(T0).open_leases == 1


def test_retiring_a_lease_releases_only_what_was_not_drawn() -> None:
    """$0.30 of a $1 lease drawn, then retired (Released $0.70): the $0.30 stays held for the two
    attempts in flight; once both are charged the lease holds nothing and is gone. It is retired once."""
    ledger = Ledger(budgets(premium_daily(1.0)))
    ledger.try_reserve(lease_req("L1", 1.0), reservation_id="L1", now=T0)
    assert ledger.releasable("L1", to_nanos(0.70)) == to_nanos(0.70)
    assert ledger.apply(Released(at=T0, reservation_id="L1", amount_nanos=to_nanos(0.70))) is True
    assert ledger.held["tier:premium"] == to_nanos(0.30)
    assert ledger.releasable("L1", 0) is None  # retired: never released again
    assert ledger.apply(Released(at=T0, reservation_id="L1", amount_nanos=to_nanos(0.30))) is False
    assert not ledger.try_reserve(lease_req("L1", 1.0), reservation_id="L1", now=T0).granted  # nor granted again
    assert not ledger.try_reserve(req("x", 0.71), reservation_id="x:0:x", now=T0).granted
    ledger.apply(ledger.settles(drawn("a", 0.08, "L1", 0.10)))
    assert ledger.held["tier:premium"] == to_nanos(0.20)
    ledger.apply(ledger.settles(drawn("b", 0.20, "L1", 0.20)))
    assert not ledger.reservations and not ledger.held
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.28)


def test_a_lease_expires_after_its_deadline_and_later_charges_are_unreserved_spend() -> None:
    """A lease of a router that died holds until its deadline + grace; a result after that is still
    charged (as a late per-request result is), against no hold."""
    ledger = Ledger(budgets(premium_daily(1.0), reservation_grace=30))  # type: ignore[arg-type]
    ledger.try_reserve(lease_req("L1", 1.0, deadline=T0 + 90), reservation_id="L1", now=T0)
    assert not ledger.try_reserve(req("a", 0.1), reservation_id="a:0:x", now=T0 + 119).granted
    assert [r.id for r in ledger.expire(T0 + 120)] == ["L1"] and not ledger.held
    late = ledger.settles(drawn("z", 0.05, "L1", 0.10, at=T0 + 121))
    assert late.reservation_id is None
    ledger.apply(late)
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.05) and not ledger.held


def test_each_draw_is_settled_once_and_a_replayed_charge_changes_nothing() -> None:
    """The same attempt answered and also reported failed (a worker redelivery): the first settles
    the draw, the second is charged unreserved and takes nothing more from the lease; a redelivered
    charge is a no-op."""
    ledger = Ledger(budgets(premium_daily(2.0)))
    ledger.try_reserve(lease_req("L1", 1.0), reservation_id="L1", now=T0)
    ledger.try_reserve(lease_req("L2", 0.5), reservation_id="L2", now=T0)
    first = ledger.settles(drawn("a", 0.05, "L1", 0.10))
    second = ledger.settles(drawn("a", 0.04, "L1", 0.10, failed=True))
    assert first.reservation_id == "L1" and second.reservation_id is None and second.reserved_nanos == 0
    for c in (first, second, first, second):
        ledger.apply(c)
    assert ledger.held["tier:premium"] == to_nanos(1.40)
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.09)
    ledger.unclaim(drawn("b", 0.0, "L2", 0.0))  # nothing claimed: nothing happens
    claimed = ledger.settles(drawn("b", 0.01, "L2", 0.10))
    ledger.unclaim(claimed)  # its entry could not be stored: the draw is open again
    assert ledger.settles(drawn("b", 0.02, "L2", 0.10)).reservation_id == "L2"


def test_a_lease_is_not_confused_with_a_request_of_the_same_id() -> None:
    """A client request whose id equals a lease's request id reserves on its own, and its final
    outcome frees its own hold only."""
    ledger = Ledger(budgets(premium_daily(2.0)))
    ledger.try_reserve(lease_req("lease-x-1", 1.0), reservation_id="lease-x-1", now=T0)
    own = ledger.try_reserve(req("lease-x-1", 0.3), reservation_id="lease-x-1:0:y", now=T0)
    assert own.granted and own.reservation is not None and own.reservation.id == "lease-x-1:0:y"
    ledger.apply(ledger.settles(result("lease-x-1", 0.1)))
    assert set(ledger.reservations) == {"lease-x-1"} and ledger.held["tier:premium"] == NANOS
    again = ledger.try_reserve(lease_req("lease-x-1", 1.0), reservation_id="lease-x-1", now=T0)
    assert again.granted and again.entry is None  # the open lease, asked again (a retry)


def test_a_charge_being_stored_keeps_its_hold_from_expiry() -> None:
    """Attempt 0 failed and attempt 1 answered; the guard stores both charges at once and the final
    one is applied first: attempt 0's hold stays until its own charge is applied, also past its
    expiry. Spent + held never drops below what is still to be charged."""
    ledger = Ledger(budgets(premium_daily(1.0), reservation_grace=0))  # type: ignore[arg-type]
    ledger.try_reserve(req("r", 0.5), reservation_id="r:0:x", now=T0)
    ledger.try_reserve(req("r", 0.5, attempt=1), reservation_id="r:1:x", now=T0)
    failed = ledger.settles(
        Charged(at=T0, key="r:0:failed", outcome="failed", request_id="r", tier="premium", cost_nanos=to_nanos(0.4))
    )
    final = ledger.settles(result("r", 0.3, attempt=1))
    assert (failed.reservation_id, final.reservation_id) == ("r:0:x", "r:1:x")
    ledger.apply(final)
    assert set(ledger.reservations) == {"r:0:x"}  # not freed by the final outcome
    assert ledger.expire(T0 + 3600) == [] and "r:0:x" in ledger.reservations  # nor by expiry
    ledger.apply(failed)
    assert not ledger.reservations and ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.7)
    ledger.try_reserve(req("s", 0.2), reservation_id="s:0:x", now=T0)
    lost = ledger.settles(result("s", 0.1))
    ledger.unclaim(lost)  # its entry could not be stored
    assert [r.id for r in ledger.expire(T0 + 3600)] == ["s:0:x"]


def test_a_ledger_written_before_leases_still_rebuilds() -> None:
    """Entries stored by an older guard (no lease fields) decode with the defaults and fold as before."""
    old = [
        b'{"kind":"reserved","at":1795348800.0,"reservation_id":"a:0:x","request_id":"a","attempt":0,'
        b'"tier":"premium","provider":"openai","model":"gpt-4o","client_key":null,"amount_nanos":500000000,'
        b'"expires_at":1795348890.0}',
        b'{"kind":"reserved","at":1795348800.0,"reservation_id":"b:0:x","request_id":"b","attempt":0,'
        b'"tier":"premium","provider":"openai","model":"gpt-4o","amount_nanos":300000000,"expires_at":1795348890.0}',
        b'{"kind":"charged","at":1795348801.0,"key":"a","outcome":"result","request_id":"a","attempt":0,'
        b'"tier":"premium","provider":"openai","model":"gpt-4o","cost_nanos":120000000,"reservation_id":"a:0:x"}',
        b'{"kind":"released","at":1795348802.0,"reservation_id":"b:0:x","reason":"released"}',
    ]
    ledger = Ledger(budgets(premium_daily(1.0)))
    for data in old:
        assert ledger.apply(msgspec.json.decode(data, type=LedgerEntry)) is True
    assert not ledger.reservations and not ledger.held
    assert ledger.spent[("tier:premium", "2026-11-22")] == to_nanos(0.12)


def lease_snapshot(ledger: Ledger) -> tuple[object, ...]:
    return (*snapshot(ledger), sorted((k, sorted(v.items())) for k, v in ledger.draws.items() if v))


lease_ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["reserve", "lease", "lease", "draw", "draw", "draw", "settle", "settle", "fail", "error"]
            + ["retire", "apply", "apply", "expire", "redeliver"]
        ),
        st.integers(0, 15),  # which one: attempt, lease, pending entry, charge
        st.integers(1, 40),  # cents
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(lease_ops, st.randoms(use_true_random=False))
def test_leases_never_let_spend_and_holds_pass_a_cap_and_rebuild_to_the_same_ledger(
    steps: list[tuple[str, int, int]], rng: random.Random
) -> None:
    """Per-request reservations and leases mixed: leases granted, drawn from (as the router does, a
    worst case per attempt), charged against (cost <= worst case; an attempt may be charged twice),
    retired (the undrawn remainder released), expired; charges and releases stored in one order and
    applied live in another (concurrent handlers). At every step spent + held stays under both caps
    and every open lease holds exactly its undrawn remainder (until retired) plus the worst cases of
    its unsettled draws; the ledger rebuilt from the stored entries equals the live one."""
    cfg = budgets(premium_daily(2.0), BudgetLimitCfg(scope="total", period="monthly", hard_usd=3.0))
    live = Ledger(cfg)
    stored: list[LedgerEntry] = []
    pending: list[LedgerEntry] = []  # stored, not applied live yet
    charges: dict[str, Charged] = {}
    book: dict[str, dict[str, int]] = {}  # the router's side: lease -> amount, drawn, retired
    attempts: list[tuple[str, int]] = []  # (request, attempt) reserved or drawn, in order
    draws: dict[tuple[str, int], tuple[str, int]] = {}  # (request, attempt) -> (lease, w)
    consumed: set[tuple[str, str, int]] = set()  # (lease, request, attempt) of applied lease charges
    charged: set[tuple[str, int]] = set()  # attempts with a charge
    clock = T0

    def apply_live(entry: LedgerEntry) -> None:
        if isinstance(entry, Charged) and entry.reservation_id in book:
            consumed.add((entry.reservation_id, entry.request_id, entry.attempt))
        live.apply(entry)

    for n, (op, pick, cents) in enumerate(steps):
        clock += 1
        now = clock
        # a new attempt: the next one of an earlier request (a fallback) or a new request
        rid, attempt = (attempts[pick][0], attempts[pick][1] + 1) if pick < len(attempts) else (f"r{n}", 0)
        if (rid, attempt) in attempts or rid in charges:
            # (not a request whose final charge is stored already: the router never reserves for a
            # finished request)
            rid, attempt = f"r{n}", 0
        if op == "reserve":
            d = live.try_reserve(req(rid, cents / 100, attempt=attempt), reservation_id=f"{rid}:{attempt}:{n}", now=now)
            if d.entry is not None:
                stored.append(d.entry)
                attempts.append((rid, attempt))
        elif op == "lease":
            lid = f"lease-{n}"
            d = live.try_reserve(lease_req(lid, cents / 40, deadline=now + 60), reservation_id=lid, now=now)
            if d.entry is not None:
                stored.append(d.entry)
                book[lid] = {"amount": d.entry.amount_nanos, "drawn": 0, "retired": 0}
        elif op == "draw":
            w = cents * NANOS // 1000
            for name, lease in book.items():
                if not lease["retired"] and name in live.reservations and lease["amount"] - lease["drawn"] >= w:
                    lease["drawn"] += w
                    draws[(rid, attempt)] = (name, w)
                    attempts.append((rid, attempt))
                    break
        elif op in ("settle", "fail", "error") and attempts:
            rid, attempt = attempts[pick % len(attempts)]
            lease_w = draws.get((rid, attempt))
            held = live.open_reservation(rid, attempt)
            # costs stay within the worst case held for the attempt (a result after its hold expired,
            # at its deadline + grace, is late: charged against nothing, modelled as free here)
            bound = (lease_w[1] if lease_w[0] in live.reservations else 0) if lease_w else held.amount if held else 0
            cost = 0 if op == "error" else max(0, min(bound, cents * NANOS // 100))
            key = {"settle": rid, "fail": f"{rid}:{attempt}:failed", "error": rid}[op]
            if live.is_charged(key) or key in charges or (rid, attempt) in charged:
                continue  # (an attempt has one outcome: two of one attempt are in the tests above)
            charged.add((rid, attempt))
            c = Charged(
                at=now,
                key=key,
                outcome={"settle": "result", "fail": "failed", "error": "error"}[op],  # type: ignore[arg-type]
                request_id=rid,
                attempt=attempt,
                tier="premium",
                provider="openai",
                model="gpt-4o",
                cost_nanos=cost,
                reservation_id=lease_w[0] if lease_w and op != "error" else None,
                reserved_nanos=lease_w[1] if lease_w and op != "error" else 0,
            )
            c = live.settles(c)
            charges[key] = c
            stored.append(c)
            pending.append(c)
        elif op == "retire" and book:
            name = sorted(book)[pick % len(book)]
            lease = book[name]
            if not lease["retired"]:
                lease["retired"] = 1
                left = lease["amount"] - lease["drawn"]
                if live.releasable(name, left) is not None:
                    entry = Released(at=now, reservation_id=name, amount_nanos=left)
                    stored.append(entry)
                    pending.append(entry)
        elif op == "apply" and pending:
            apply_live(pending.pop(pick % len(pending)))
        elif op == "expire" and pick < 4:
            clock += 100
            live.expire(clock)
        elif op == "redeliver" and charges:
            again = charges[sorted(charges)[pick % len(charges)]]
            if again not in pending:
                assert live.apply(again) is False
        day = live.spent[("tier:premium", "2026-11-22")] + live.held.get("tier:premium", 0)
        assert day <= to_nanos(2.0)
        assert live.spent[("total", "2026-11")] + live.held.get("total", 0) <= to_nanos(3.0)
        for name, lease in book.items():
            res = live.reservations.get(name)
            if res is None:
                continue
            unsettled = sum(w for (q, a), (ln, w) in draws.items() if ln == name and (ln, q, a) not in consumed)
            assert res.hold == unsettled + (0 if res.retired else lease["amount"] - lease["drawn"])
    rng.shuffle(pending)
    for entry in pending:
        apply_live(entry)
    event(f"lease draws settled: {min(len(consumed), 5)}+")
    event(f"leases retired: {min(sum(x['retired'] for x in book.values()), 2)}+")
    rebuilt = Ledger(cfg)
    for entry in [msgspec.json.decode(msgspec.json.encode(e), type=LedgerEntry) for e in stored]:
        rebuilt.apply(entry)
    live.expire(clock)
    rebuilt.expire(clock)
    assert lease_snapshot(rebuilt) == lease_snapshot(live)


# --- abandoned attempts and late answers -----------------------------------------------------------
@dataclass
class Attempt:
    rid: str
    n: int
    w: int  # the worst case held for it
    cost: int  # what its provider call costs (<= w), known when it ends
    deadline: float


late_ops = st.lists(
    st.tuples(
        st.sampled_from(["attempt", "attempt", "attempt", "end", "end", "give_up", "apply", "apply", "tick"]),
        st.integers(0, 15),  # which request / running attempt / stored charge
        st.integers(1, 40),  # cents, or seconds
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(late_ops, st.randoms(use_true_random=False))
def test_late_answers_of_abandoned_attempts_never_take_spend_past_a_tight_cap(
    steps: list[tuple[str, int, int]], rng: random.Random
) -> None:
    """The router as it is: it gives up on an attempt (attempt timeout) and reserves the next one
    without cancelling the first, whose call goes on. The first attempt to end answers the request
    (the final outcome); every attempt ending after it is charged late, as a cancelled attempt with
    its cost; a request may also end in an error while its attempts still run. Workers stop at the
    deadline. The guard reads what is stored late and in any order (``charged_through`` follows what
    it has read) while other requests reserve whatever room is free. At every step what was really
    spent (charged or stored to be) stays under the $1 cap, and so does spent + held."""
    cap = to_nanos(1.0)
    grace = 30.0
    cfg = budgets(premium_daily(1.0), reservation_grace=grace)  # type: ignore[arg-type]
    live = Ledger(cfg)
    live.charged_through = 0.0
    stored: list[LedgerEntry] = []
    pending: list[Charged] = []  # stored in RESULTS, not read by the guard yet
    running: list[Attempt] = []
    attempts: dict[str, int] = {}  # request -> attempts reserved
    deadlines: dict[str, float] = {}
    final: set[str] = set()  # requests whose final outcome is stored
    clock = T0

    def end(a: Attempt, at: float) -> None:
        running.remove(a)
        if a.rid in final:  # it lost the race: the cloud_proxy records it as a cancelled attempt
            pending.append(failed(a.rid, a.cost / NANOS, attempt=a.n, at=at))
        else:
            final.add(a.rid)
            pending.append(result(a.rid, a.cost / NANOS, attempt=a.n, at=at))

    def really_spent() -> int:
        return live.spent[("tier:premium", "2026-11-22")] + sum(c.cost_nanos for c in pending)

    for n, (op, pick, cents) in enumerate(steps):
        if op == "attempt":  # a new request, or the next attempt of one (the router gave up on its last)
            rid = f"r{pick}" if f"r{pick}" not in final else f"r{pick}-{n}"
            k = attempts.get(rid, 0)
            deadline = deadlines.setdefault(rid, clock + 60)
            if deadline <= clock:
                continue
            w = to_nanos(cents / 100)
            ask = msgspec.structs.replace(req(rid, cents / 100, attempt=k), deadline=deadline)
            d = live.try_reserve(ask, reservation_id=f"{rid}:{k}:{n}", now=clock)
            if d.entry is not None:
                stored.append(d.entry)
                attempts[rid] = k + 1
                cost = rng.randint(0, w)  # what the provider bills, never more than the worst case
                running.append(Attempt(rid, k, w, cost, deadline))
        elif op == "end" and running:
            end(running[pick % len(running)], clock)
        elif op == "give_up" and running:  # the router answers an error; the attempts' calls go on
            rid = running[pick % len(running)].rid
            if rid not in final:
                final.add(rid)
                pending.append(Charged(at=clock, key=rid, outcome="error", request_id=rid, attempt=attempts[rid] - 1))
        elif op == "apply" and pending:  # the guard reads one stored result (not necessarily the oldest)
            c = live.settles(pending.pop(pick % len(pending)))
            stored.append(c)
            live.apply(c)
        elif op == "tick":
            clock += cents * 3
            for a in sorted((a for a in running if a.deadline <= clock), key=lambda a: a.deadline):
                end(a, a.deadline)  # the worker stops at the deadline and stores what it has
            live.charged_through = min([c.at for c in pending] + [clock])  # what the guard has read up to
            live.expire(clock)
        spent = live.spent[("tier:premium", "2026-11-22")]
        assert really_spent() <= cap
        assert spent + live.held.get("tier:premium", 0) <= cap
    rng.shuffle(pending)
    for c in pending:
        c = live.settles(c)
        stored.append(c)
        live.apply(c)
    assert live.spent[("tier:premium", "2026-11-22")] <= cap
    event(f"late charges: {min(sum(1 for e in stored if isinstance(e, Charged) and e.outcome == 'failed'), 3)}+")
    rebuilt = Ledger(cfg)
    for entry in stored:
        rebuilt.apply(entry)
    live.charged_through = rebuilt.charged_through
    live.expire(clock)
    rebuilt.expire(clock)
    assert snapshot(rebuilt) == snapshot(live)
