"""The budget_guard's other pure parts: what a tier command does, what a stored result costs,
how a report groups and compares charges."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.budget_guard.charges import charge_of
from actors.budget_guard.report import aggregate, compare, render
from actors.budget_guard.tiers import apply_command, event_for, overdue
from policy.limits import Calendar
from schemas.budget import Charged
from schemas.codec import encode
from schemas.commands import SetTier
from schemas.config import ConfigError, load_config
from schemas.errors import ErrorInfo, SchemaError
from schemas.events import TierDisabled, TierEnabled
from schemas.result import AttemptFailed, GenerateError, GenerateResult, Provenance, Response, Usage
from schemas.state import TierState
from tests.support.profile import write_profile

NOW = 1_800_000_000.0


def disabled(until: float | None) -> TierState:
    return TierState(tier="premium", enabled=False, reason="spike", until=until, changed_at=NOW - 10)


def cmd(enabled: bool, until: float | None = None, by: str = "operator:ada") -> SetTier:
    return SetTier(tier="premium", enabled=enabled, until=until, by=by)


def test_disable_then_enable_by_an_operator() -> None:
    off = apply_command(None, cmd(False, NOW + 60, by="budget_guard"), NOW)
    assert off is not None and not off.enabled and off.until == NOW + 60
    assert isinstance(event_for(off), TierDisabled)
    on = apply_command(off, cmd(True), NOW + 1)
    assert on is not None and on.enabled and on.until is None and "operator:ada" in on.reason
    assert isinstance(event_for(on), TierEnabled)
    assert apply_command(on, cmd(True), NOW + 2) is None  # already enabled


def test_a_scheduled_enable_ends_only_the_disable_it_was_scheduled_for() -> None:
    """The schedule for a disable until T does not cut short a newer disable until T2 or an open-ended one."""
    assert apply_command(disabled(NOW + 100), cmd(True, NOW + 50, by="budget_guard:schedule"), NOW + 50) is None
    assert apply_command(disabled(None), cmd(True, NOW + 50, by="budget_guard:schedule"), NOW + 50) is None
    done = apply_command(disabled(NOW + 50), cmd(True, NOW + 50, by="budget_guard:schedule"), NOW + 50)
    assert done is not None and done.enabled


def test_disabling_a_disabled_tier_keeps_the_longer_disable_and_stale_disables_do_nothing() -> None:
    assert apply_command(disabled(None), cmd(False, NOW + 60), NOW) is None  # open-ended beats any end
    assert apply_command(disabled(NOW + 600), cmd(False, NOW + 60), NOW) is None
    longer = apply_command(disabled(NOW + 60), cmd(False, NOW + 600), NOW)
    assert longer is not None and longer.until == NOW + 600
    forever = apply_command(disabled(NOW + 60), cmd(False, None), NOW)
    assert forever is not None and forever.until is None
    assert apply_command(None, cmd(False, NOW - 1), NOW) is None  # its time has passed
    assert overdue(disabled(NOW - 1), NOW) and not overdue(disabled(None), NOW)


def _result(**kw: object) -> GenerateResult:
    fields: dict[str, object] = dict(
        request_id="r1",
        text="hi",
        model="gpt-4o",
        family="gpt",
        tier="premium",
        target="openai",
        usage=Usage(input_tokens=1000, output_tokens=500),
        cost_usd=0.0033,
        client_key="ci",
        created_at=NOW,
    )
    fields.update(kw)
    return GenerateResult(**fields)  # type: ignore[arg-type]


def test_a_result_is_charged_under_its_msg_id_with_its_cost() -> None:
    c = charge_of("orch.result.op.r1", encode(_result()), NOW + 5)
    assert (c.key, c.outcome, c.tier, c.provider, c.model, c.client_key) == (
        "r1",
        "result",
        "premium",
        "openai",
        "gpt-4o",
        "ci",
    )
    assert (c.cost_nanos, c.input_tokens, c.output_tokens, c.at) == (3_300_000, 1000, 500, NOW)
    assert charge_of("orch.result.op.r1", encode(_result(created_at=0.0)), NOW + 5).at == NOW + 5


def test_a_fan_out_parent_costs_nothing_its_children_were_charged() -> None:
    """A diverse/ensemble parent result (with ``responses``) aggregates children whose own results
    (with parent_id) were charged: charging it too would count the money twice."""
    answer = Response(
        request_id="c1",
        text="x",
        provenance=Provenance(model="gpt-4o", family="gpt", tier="premium", target="openai"),
        cost_usd=0.5,
    )
    agg = charge_of("orch.result.op.r1", encode(_result(responses=[answer], cost_usd=0.5)), NOW)
    assert agg.outcome == "aggregate" and agg.cost_nanos == 0 and agg.input_tokens == 0
    child = charge_of("orch.result.op.c1", encode(_result(request_id="c1", parent_id="r1", cost_usd=0.5)), NOW)
    assert child.outcome == "result" and child.cost_nanos == 500_000_000


def test_failed_attempts_errors_and_cache_hits() -> None:
    failed = AttemptFailed(
        request_id="r1",
        attempt=2,
        target="anthropic",
        model="claude-sonnet",
        tier="premium",
        error=ErrorInfo.of("provider_error", "boom"),
        cost_usd=0.01,
        created_at=NOW,
    )
    c = charge_of("orch.result.op.r1.failed", encode(failed), NOW)
    assert (c.key, c.outcome, c.attempt, c.provider, c.cost_nanos) == ("r1:2:failed", "failed", 2, "anthropic", 10**7)
    err = GenerateError(request_id="r1", error=ErrorInfo.of("timeout", "late"), attempts=3)
    e = charge_of("orch.result.op.r1", encode(err), NOW)
    assert (e.key, e.outcome, e.cost_nanos, e.final) == ("r1", "error", 0, True)
    hit = charge_of("orch.result.op.r1", encode(_result(cached=True, cost_usd=0.0)), NOW)
    assert hit.provider == "cache" and hit.cost_nanos == 0
    local = charge_of("orch.result.op.r1", encode(_result(tier="local", target="cpu0")), NOW)
    assert local.provider == "local"


def test_garbage_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        charge_of("orch.result.op.r1", b"{}", NOW)
    with pytest.raises(SchemaError):
        charge_of("orch.result.op.r1.other.x", encode(_result()), NOW)
    with pytest.raises(SchemaError):
        charge_of("orch.result.op.r1", encode(_result(cost_usd=float("inf"))), NOW)


def test_report_groups_charges_and_compares_with_the_ledger() -> None:
    charges = [
        Charged(at=NOW, key="a", outcome="result", request_id="a", tier="premium", model="gpt-4o", cost_nanos=300),
        Charged(at=NOW, key="b", outcome="result", request_id="b", tier="premium", model="claude", cost_nanos=200),
        Charged(at=NOW, key="b:0:failed", outcome="failed", request_id="b", tier="premium", cost_nanos=50),
        Charged(at=NOW, key="c", outcome="result", request_id="c", tier="local", input_tokens=7, cost_nanos=1),
        Charged(at=NOW, key="d", outcome="error", request_id="d"),
    ]
    lines, total = aggregate(charges, "tier", Calendar("UTC"))
    assert [(x.label, x.results, x.failed, x.errors, x.cost_nanos) for x in lines] == [
        ("premium", 2, 1, 0, 550),
        ("local", 1, 0, 0, 1),
        ("-", 0, 0, 1, 0),
    ]
    assert total.cost_nanos == 551 and total.input_tokens == 7
    table = render(lines, total, "tier")
    assert "premium" in table and "$0.000000551" in table
    same = compare({c.key: c.cost_nanos for c in charges}, {c.key: c.cost_nanos for c in charges})
    assert same.equal and same.describe().startswith("ledger agrees: 5 charges")
    off = compare({"a": 300, "b": 200}, {"a": 300, "b": 201, "z": 5})
    assert not off.equal and off.differ == ["b"] and off.only_ledger == ["z"]
    assert "1 amounts differ" in off.describe()


def test_budget_config_problems_name_their_path(tmp_path: Path) -> None:
    """An unknown time zone, and monthly budgets with a ledger shorter than a month, fail at load."""
    overrides = {"budgets": {"timezone": "Mars/Olympus", "ledger_history": "10d"}}
    with pytest.raises(ConfigError) as err:
        load_config(write_profile(tmp_path / "p", "nats://127.0.0.1:4222", overrides=overrides))
    text = "\n".join(err.value.problems)
    assert "budgets.timezone: unknown time zone 'Mars/Olympus'" in text
    assert "budgets.ledger_history: monthly budgets need a ledger history of at least 32 days" in text
