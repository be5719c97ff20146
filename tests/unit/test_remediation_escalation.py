"""The AlertHandler's plans and the escalation policy as pure functions of plain state (lab profile)."""

from __future__ import annotations

import pytest

from actors.diversity_monitor.escalation import (
    daily_trigger,
    digest_message,
    due_steps,
    steps_for,
    weekly_trigger,
)
from actors.diversity_monitor.remediation import (
    fast_models,
    line_of,
    plan_backlog,
    plan_cost_spike,
    plan_oom,
    undo_overflow,
)
from actors.diversity_monitor.rules import Alert
from actors.diversity_monitor.window import OomRec
from schemas.commands import LoadModel, SetOverflow, SetTier, UnloadModel
from schemas.config import load_config
from schemas.config.ops import AlertRuleCfg, ConditionCfg
from schemas.state import CardState, HostState, LoadedModel, QueueState, TierState

LAB = load_config("lab")
NOW = 1_764_000_000.0
GB = 10**9


def host(name: str, free_gb: float, *models: LoadedModel, cards: tuple[str, ...] = ("c0", "c1")) -> HostState:
    total = 24 * GB * len(cards)
    used = total - int(free_gb * GB)
    per = [min(24 * GB, max(0, used - i * 24 * GB)) for i in range(len(cards))]
    return HostState(
        host=name,
        heartbeat_at=NOW,
        models=list(models),
        cards=[CardState(card=c, total_bytes=24 * GB, used_bytes=u) for c, u in zip(cards, per, strict=True)],
    )


def ooms(host_name: str, card: str, n: int, model: str = "llama3.1-70b", start: float = NOW) -> list[OomRec]:
    return [OomRec(start + i, host_name, card, model, f"r{i}") for i in range(n)]


# --- OOM -----------------------------------------------------------------------------------------
def test_oom_unloads_the_largest_model_and_loads_the_smaller_variant_of_its_line() -> None:
    """The paper's example: Llama 3.1 70B replaced by Llama 3.1 8B on the same cards."""
    a = host(
        "m5-p40-a",
        0,
        LoadedModel(model="llama3.1-70b", bytes=48 * GB, cards=["P40_0", "P40_1"]),
        cards=("P40_0", "P40_1"),
    )
    plan = plan_oom(ooms("m5-p40-a", "P40_0", 6), {"m5-p40-a": a}, LAB)
    assert plan.action == "swap"
    assert plan.commands == [
        UnloadModel(host="m5-p40-a", model="llama3.1-70b", reason="6 OOM(s) on m5-p40-a card P40_0"),
        LoadModel(host="m5-p40-a", model="llama3.1-8b", reason="smaller llama model after OOM"),
    ]


def test_oom_picks_the_largest_model_on_the_card_that_ran_out() -> None:
    small = LoadedModel(model="qwen2.5-coder-1.5b", bytes=3 * GB, cards=["P40_2"])
    large = LoadedModel(model="mistral-large", bytes=22 * GB, cards=["P40_2"])
    other = LoadedModel(model="deepseek-r1-70b", bytes=24 * GB, cards=["P40_3"])
    b = host("m5-p40-b", 1, small, large, other, cards=("P40_2", "P40_3"))
    plan = plan_oom(ooms("m5-p40-b", "P40_2", 6, "qwen2.5-coder-1.5b"), {"m5-p40-b": b}, LAB)
    assert isinstance(plan.commands[0], UnloadModel) and plan.commands[0].model == "mistral-large"
    assert isinstance(plan.commands[1], LoadModel) and plan.commands[1].model in LAB.local_models()
    loaded = LAB.local_models()[plan.commands[1].model]
    assert loaded.family == "mistral" and loaded.size is not None and loaded.size < 22.5 * GB


def test_oom_acts_on_the_card_with_most_ooms() -> None:
    a = host("m5-p40-a", 0, LoadedModel(model="llama3.1-70b", bytes=48 * GB), cards=("P40_0", "P40_1"))
    c = host("m5-p40-c", 0, LoadedModel(model="deepseek-r1-70b", bytes=48 * GB), cards=("P40_4", "P40_5"))
    records = ooms("m5-p40-a", "P40_0", 2) + ooms("m5-p40-c", "P40_4", 4, "deepseek-r1-70b")
    plan = plan_oom(records, {"m5-p40-a": a, "m5-p40-c": c}, LAB)
    assert [(type(cmd).__name__, cmd.host) for cmd in plan.commands] == [
        ("UnloadModel", "m5-p40-c"),
        ("LoadModel", "m5-p40-c"),
    ]


def test_oom_only_unloads_when_no_smaller_model_of_the_family_exists_or_fits() -> None:
    kimi = host("m5-p40-c", 0, LoadedModel(model="kimi-k2-32b", bytes=48 * GB), cards=("P40_4", "P40_5"))
    plan = plan_oom(ooms("m5-p40-c", "P40_4", 6, "kimi-k2-32b"), {"m5-p40-c": kimi}, LAB)
    assert plan.action == "unload" and [type(c).__name__ for c in plan.commands] == ["UnloadModel"]
    assert "no smaller kimi model fits" in plan.detail


def test_oom_without_live_state_unloads_the_model_the_ooms_name() -> None:
    plan = plan_oom(ooms("m5-p40-a", "P40_0", 6), {}, LAB)
    assert plan.commands[0] == UnloadModel(
        host="m5-p40-a", model="llama3.1-70b", reason="6 OOM(s) on m5-p40-a card P40_0"
    )


def test_model_lines() -> None:
    assert line_of("llama3.1-70b") == ("llama3.1", "")
    assert line_of("llama3.1-8b-instruct") == ("llama3.1", "-instruct")
    assert line_of("qwen2.5-coder-14b") == ("qwen2.5-coder", "")
    assert line_of("codestral") == ("codestral", "")


# --- backlog -------------------------------------------------------------------------------------
BACKLOG = [QueueState(target="local:m5-p40-b:mistral-large", depth=620, oldest_wait_s=700, backlog=True)]


def test_fast_models_are_the_rotators_scale_up_models_first() -> None:
    assert fast_models(LAB)[:3] == ["llama3.1-8b", "codellama-7b", "llama3.2-3b"]


def test_backlog_loads_llama_8b_where_16_gb_are_free_the_papers_rule() -> None:
    """llama3.1-8b is 16 GB in the library; with the host's 0.6 GB overhead it needs 16.6 GB free."""
    hosts = {"m5-p40-b": host("m5-p40-b", 16.6), "m5-p40-c": host("m5-p40-c", 20.0)}
    plan = plan_backlog(BACKLOG, hosts, {}, LAB, NOW)
    assert plan.action == "load_fast_model"
    assert plan.commands[0] == LoadModel(
        host="m5-p40-c",
        model="llama3.1-8b",
        instances=1,
        reason="queue backlog (local:m5-p40-b:mistral-large: 620 pending)",
    )


def test_backlog_with_less_room_loads_a_smaller_fast_model() -> None:
    """5 GB free holds no variant of llama3.1-8b with its KV cache (16.5 GB would: its 4- or 8-bit file,
    the way the gpu_host plans a load), so a smaller fast model is loaded."""
    plan = plan_backlog(BACKLOG, {"m5-p40-b": host("m5-p40-b", 5)}, {}, LAB, NOW)
    cmd = plan.commands[0]
    assert isinstance(cmd, LoadModel) and cmd.model != "llama3.1-8b"
    assert "fast-inference" in LAB.local_models()[cmd.model].specialisations


def test_backlog_adds_an_instance_of_a_fast_model_already_loaded() -> None:
    eight = LoadedModel(model="llama3.1-8b", bytes=16 * GB)
    plan = plan_backlog(BACKLOG, {"m5-p40-b": host("m5-p40-b", 20, eight)}, {}, LAB, NOW)
    assert isinstance(plan.commands[0], LoadModel) and plan.commands[0].instances == 2


def test_backlog_without_memory_overflows_the_backlogged_model_to_together() -> None:
    plan = plan_backlog(BACKLOG, {"m5-p40-b": host("m5-p40-b", 0.5)}, {}, LAB, NOW)
    assert plan.action == "overflow"
    assert plan.commands == [
        SetOverflow(
            model="mistral-large", enabled=True, tier="together", reason="queue backlog, no memory for another model"
        )
    ]
    assert undo_overflow(plan.commands) == [
        SetOverflow(model="mistral-large", enabled=False, tier="together", reason="queue backlog resolved")
    ]


def test_backlog_overflow_uses_premium_when_together_is_off_and_nothing_when_both_are() -> None:
    full = {"m5-p40-b": host("m5-p40-b", 0.5)}
    off = TierState(tier="together", enabled=False)
    plan = plan_backlog(BACKLOG, full, {"together": off}, LAB, NOW)
    assert isinstance(plan.commands[0], SetOverflow) and plan.commands[0].tier == "premium"
    both = {"together": off, "premium": TierState(tier="premium", enabled=False)}
    assert plan_backlog(BACKLOG, full, both, LAB, NOW).commands == []


def test_backlog_already_overflowing_sends_nothing_again() -> None:
    full = {"m5-p40-b": host("m5-p40-b", 0.5)}
    assert plan_backlog(BACKLOG, full, {}, LAB, NOW, overflowing={"mistral-large"}).action == "none"
    assert plan_backlog(BACKLOG, full, {}, LAB, NOW, overflowing={"*"}).action == "none"


# --- cost spike -----------------------------------------------------------------------------------
def test_cost_spike_disables_premium_until_the_next_day() -> None:
    plan = plan_cost_spike({}, LAB, 52.5, NOW + 3600)
    assert plan.commands == [
        SetTier(tier="premium", enabled=False, until=NOW + 3600, reason="cost spike: $52.50 spent today")
    ]


def test_cost_spike_does_nothing_when_the_budget_guard_disabled_premium_already() -> None:
    plan = plan_cost_spike({"premium": TierState(tier="premium", enabled=False, reason="hard budget")}, LAB, 60, None)
    assert plan.action == "none" and not plan.commands and "hard budget" in plan.detail


# --- escalation -----------------------------------------------------------------------------------
def alert(severity: str = "critical", **kw: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": "a-1",
        "rule": "all_models_offline",
        "severity": severity,
        "raised_at": NOW,
        "description": "All models offline",
    }
    fields.update(kw)
    return Alert(**fields)  # type: ignore[arg-type]


def test_the_lab_escalation_of_a_critical_alert_follows_the_paper() -> None:
    """Slack at once, the admin's mail after 15 min, everyone's mail and premium off after 1 h."""
    a = alert()
    steps = steps_for(LAB.alerts.rules["all_models_offline"], "critical", LAB.alerts)
    assert [i for i, _ in due_steps(a, steps, NOW)] == [0]
    a.steps_done.add(0)
    assert due_steps(a, steps, NOW + 899) == []
    assert [(i, s.notify) for i, s in due_steps(a, steps, NOW + 900)] == [(1, ["email_admin"])]
    a.steps_done.add(1)
    [(i, last)] = due_steps(a, steps, NOW + 3600)
    assert i == 2 and last.notify == ["email_all"] and last.action == "disable_premium"


def test_acknowledged_or_resolved_alerts_do_not_escalate() -> None:
    steps = steps_for(None, "critical", LAB.alerts)
    acked = alert(acked_at=NOW + 5)
    acked.steps_done.add(0)
    assert due_steps(acked, steps, NOW + 7200) == []
    assert due_steps(alert(resolved_at=NOW + 5), steps, NOW + 7200) == []


def test_medium_and_low_alerts_only_go_to_digests_and_a_rules_notify_overrides() -> None:
    assert due_steps(alert("medium"), steps_for(None, "medium", LAB.alerts), NOW + 86400) == []
    assert due_steps(alert("low"), steps_for(None, "low", LAB.alerts), NOW + 86400) == []
    rule = AlertRuleCfg(when=[ConditionCfg(metric="hosts_up", op="<", value=1)], severity="low", notify=["slack"])
    assert [s.notify for _, s in due_steps(alert("low"), steps_for(rule, "low", LAB.alerts), NOW)] == [["slack"]]


def test_a_digest_lists_its_alerts_counts_the_rest_and_shows_the_figures() -> None:
    medium = alert(
        "medium",
        alert_id="m-1",
        rule="model_diversity_low",
        description="Model diversity low",
        raised_at=NOW - 3600,
        context={"model_families[1h]": 2.0},
    )
    old = alert("medium", alert_id="m-0", rule="model_diversity_low", raised_at=NOW - 2 * 86400)
    crit = alert("critical", alert_id="c-1", raised_at=NOW - 60)
    subject, text = digest_message(
        "daily", [old, medium, crit], {"model_diversity_low"}, NOW, {"diversity.diversity_score": 0.42}
    )
    assert subject == "[orchestra] daily digest: 1 alert(s) for review"
    assert "m-1: Model diversity low" in text and "m-0" not in text and "model_families[1h]: 2.0" in text
    assert "All alerts in the period: 1 critical, 1 medium" in text and "diversity.diversity_score: 0.42" in text


def test_digest_times_are_checked() -> None:
    assert daily_trigger("09:00") == {"hour": 9, "minute": 0}
    assert weekly_trigger("mon 09:30") == {"day_of_week": "mon", "hour": 9, "minute": 30}
    with pytest.raises(ValueError, match="daily_at"):
        daily_trigger("25:00")
    with pytest.raises(ValueError, match="weekly_at"):
        weekly_trigger("someday 09:00")
