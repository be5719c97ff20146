"""Every alert rule of the lab profile (the paper's §10.2) fires on its condition and stays quiet below
it: the metrics over plain observations (time injected) and the rule engine's state machine."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import pytest

from actors.diversity_monitor.rules import Engine, Raised, Resolved, alert_id
from actors.diversity_monitor.window import LiveState, Measure, Observations, answers_of
from schemas.config import load_config
from schemas.errors import ErrorInfo
from schemas.events import (
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    BudgetThreshold,
    CostSpike,
    Notified,
    Oom,
    Remediation,
)
from schemas.result import AttemptFailed, GenerateError, GenerateResult, Provenance, Response
from schemas.state import HostState, LoadedModel, QueueState

LAB = load_config("lab")
NOW = 1_764_000_000.0  # 2025-11-24 16:00 UTC
HOUR = 3600.0


def result(
    i: int,
    *,
    model: str = "llama3.1-8b",
    family: str = "llama",
    tier: str = "local",
    cost: float = 0.0,
    cached: bool = False,
) -> GenerateResult:
    return GenerateResult(
        request_id=f"r{i}",
        text=f"answer {i}",
        model=model,
        family=family,
        tier=tier,
        target="h",  # type: ignore[arg-type]
        cost_usd=cost,
        cached=cached,
        provenance=Provenance(model=model, family=family, tier=tier, target="h", temperature=0.7),  # type: ignore[arg-type]
    )


def measure_at(obs: Observations, now: float, live: LiveState, metric: str, window: float | None) -> Measure:
    return obs.measure(metric, window, now, live)


def feed(obs: Observations, results: Iterable[tuple[float, GenerateResult]]) -> None:
    for at, r in results:
        obs.add_outcome(r, at)
        obs.add_answers(answers_of(r, at))


def host(name: str, *models: str, beat: float = NOW) -> HostState:
    return HostState(host=name, heartbeat_at=beat, models=[LoadedModel(model=m) for m in models])


def firing(obs: Observations, live: LiveState, now: float = NOW, engine: Engine | None = None) -> set[str]:
    engine = engine or Engine(LAB.alerts.rules)
    engine.evaluate(lambda metric, window: obs.measure(metric, window, now, live), now)
    return set(engine.active)


def fresh() -> tuple[Observations, LiveState]:
    """A healthy orchestra: models loaded, no queue, nothing else happening."""
    return Observations(HOUR), LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b")})


def test_a_healthy_orchestra_raises_nothing() -> None:
    obs, live = fresh()
    families = [("llama3.1-8b", "llama"), ("qwen2.5-coder-7b", "qwen"), ("mistral-7b", "mistral")]
    feed(
        obs,
        (
            (NOW - 60 + i, result(i, model=families[i % 3][0], family=families[i % 3][1], cached=i % 2 == 0))
            for i in range(60)
        ),
    )
    assert firing(obs, live) == set()


# --- all models offline -----------------------------------------------------------------------------
def test_all_models_offline_fires_when_no_host_has_a_model_loaded() -> None:
    obs, _ = fresh()
    assert firing(obs, LiveState(hosts={"m5-p40-a": host("m5-p40-a")})) == {"all_models_offline"}
    assert firing(obs, LiveState()) == {"all_models_offline"}


def test_all_models_offline_counts_only_hosts_with_a_fresh_heartbeat() -> None:
    obs, _ = fresh()
    stale = LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b", beat=NOW - 120)})
    assert firing(obs, stale) == {"all_models_offline"}


def test_all_models_offline_stays_quiet_with_one_model_loaded() -> None:
    obs, live = fresh()
    assert "all_models_offline" not in firing(obs, live)


# --- queue backlog ------------------------------------------------------------------------------------
def queues(depth: int, wait: float) -> LiveState:
    q = QueueState(
        target="local:m5-p40-a:llama3.1-70b", depth=depth, oldest_wait_s=wait, backlog=True, updated_at=NOW - 1
    )
    return LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b")}, queues={q.target: q})


def test_queue_backlog_fires_when_depth_and_wait_are_both_over() -> None:
    obs, _ = fresh()
    assert firing(obs, queues(501, 601)) == {"queue_backlog_critical"}


@pytest.mark.parametrize(("depth", "wait"), [(500, 601), (501, 600), (2000, 30), (10, 3600)])
def test_queue_backlog_stays_quiet_unless_both_conditions_hold(depth: int, wait: float) -> None:
    obs, _ = fresh()
    assert firing(obs, queues(depth, wait)) == set()


def test_a_stale_queue_record_is_not_a_backlog() -> None:
    obs, _ = fresh()
    live = queues(900, 900)
    old = {
        k: QueueState(target=q.target, depth=q.depth, oldest_wait_s=q.oldest_wait_s, updated_at=NOW - 300)
        for k, q in live.queues.items()
    }
    assert firing(obs, LiveState(hosts=live.hosts, queues=old)) == set()


# --- GPU OOM --------------------------------------------------------------------------------------
def oom(at: float, i: int) -> Oom:
    return Oom(host="m5-p40-a", card="P40_0", model="llama3.1-70b", request_id=f"o{i}", at=at)


def test_gpu_oom_fires_on_six_ooms_within_the_hour() -> None:
    obs, live = fresh()
    for i in range(6):
        obs.add_event(oom(NOW - 3000 + i * 60, i), NOW - 3000 + i * 60)
    assert firing(obs, live) == {"gpu_oom_failures"}


def test_gpu_oom_stays_quiet_at_five_and_forgets_ooms_older_than_an_hour() -> None:
    obs, live = fresh()
    for i in range(5):
        obs.add_event(oom(NOW - 600, i), NOW - 600)
    assert firing(obs, live) == set()
    obs.add_event(oom(NOW - HOUR - 10, 99), NOW - HOUR - 10)
    assert firing(obs, live) == set()


def test_an_oom_reported_as_event_and_as_failed_attempt_counts_once() -> None:
    obs, live = fresh()
    for i in range(5):
        obs.add_event(oom(NOW - 60, i), NOW - 60)
        obs.add_failure(
            AttemptFailed(
                request_id=f"o{i}",
                attempt=0,
                target="m5-p40-a",
                model="llama3.1-70b",
                tier="local",
                error=ErrorInfo.of("oom", "out of memory"),
            ),
            NOW - 59,
        )
    assert obs.measure("oom_errors", HOUR, NOW, live).value == 5
    obs.add_failure(
        AttemptFailed(
            request_id="other",
            attempt=0,
            target="m5-p40-a",
            model="llama3.1-70b",
            tier="local",
            error=ErrorInfo.of("oom", "out of memory"),
        ),
        NOW - 30,
    )
    assert firing(obs, live) == {"gpu_oom_failures"}


# --- cost spike -----------------------------------------------------------------------------------
def test_cost_spike_fires_when_todays_cloud_spend_passes_fifty_dollars() -> None:
    obs, live = fresh()
    feed(obs, ((NOW - 600 + i, result(i, model="gpt-4o", family="gpt", tier="premium", cost=10.01)) for i in range(5)))
    assert obs.daily_spend(NOW) == pytest.approx(50.05)
    assert firing(obs, live) == {"cost_spike"}


def test_cost_spike_stays_quiet_at_fifty_and_ignores_yesterday_and_local_cost() -> None:
    obs, live = fresh()
    feed(obs, ((NOW - 600 + i, result(i, model="gpt-4o", family="gpt", tier="premium", cost=10.0)) for i in range(5)))
    feed(obs, [(NOW - 86400, result(100, model="gpt-4o", family="gpt", tier="premium", cost=30.0))])
    feed(obs, [(NOW - 60, result(101, tier="local", cost=5.0))])
    assert firing(obs, live) == set()


def test_the_budget_guards_cost_spike_event_raises_the_daily_figure() -> None:
    obs, live = fresh()
    obs.add_event(CostSpike(daily_usd=62.5, limit_usd=50.0, at=NOW - 5), NOW - 5)
    assert firing(obs, live) == {"cost_spike"}


# --- budget thresholds ----------------------------------------------------------------------------
def crossed(scope: str, fraction: float, *, hard: bool = False) -> BudgetThreshold:
    return BudgetThreshold(scope=scope, spent_usd=fraction * 100, limit_usd=100.0, fraction=fraction, hard=hard)


def test_a_soft_budget_threshold_raises_an_alert_naming_the_budget() -> None:
    obs, live = fresh()
    obs.add_event(crossed("tier:premium:monthly", 0.8), NOW - 60)
    obs.add_event(crossed("tier:together:monthly", 0.5), NOW - 30)
    engine = Engine(LAB.alerts.rules)
    assert firing(obs, live, engine=engine) == {"budget_threshold"}
    context = engine.active["budget_threshold"].context
    assert context["budget_used_fraction[1d]"] == 0.8
    assert context["budget_used_fraction[1d] detail"] == "tier:premium:monthly"


def test_a_hard_cap_raises_its_own_alert_too() -> None:
    obs, live = fresh()
    obs.add_event(crossed("total:monthly", 1.0, hard=True), NOW - 60)
    assert firing(obs, live) == {"budget_threshold", "budget_hard_cap"}


def test_budget_alerts_stay_quiet_without_a_threshold_and_end_a_day_after_it() -> None:
    obs, live = fresh()
    assert firing(obs, live) == set()
    obs.add_event(crossed("total:monthly", 0.8), NOW - 86400 - 60)
    assert firing(obs, live) == set()


def test_a_fan_out_result_does_not_count_its_childrens_spend_twice() -> None:
    obs, _ = fresh()
    child = result(1, model="gpt-4o", family="gpt", tier="premium", cost=30.0)
    assert child.provenance is not None
    combined = GenerateResult(
        request_id="p",
        text="x",
        model="diverse",
        family="mixed",
        tier="premium",
        target="fanout",
        cost_usd=30.0,
        responses=[Response(request_id="r1", text="answer 1", provenance=child.provenance)],
    )
    obs.add_outcome(child, NOW - 5)
    obs.add_outcome(combined, NOW - 4)
    assert obs.daily_spend(NOW) == pytest.approx(30.0)
    assert obs.total(NOW - HOUR, NOW).requests == 1


# --- cache hit rate, sustained for 6 hours --------------------------------------------------------
def run_hours(
    obs: Observations, live: LiveState, hours: float, hit_every: int, per_hour: int = 60, start: float = NOW
) -> list[tuple[float, set[str]]]:
    """Requests at an even pace; every `hit_every`-th is a cache hit; the engine evaluates every 15 min."""
    engine = Engine(LAB.alerts.rules)
    step = HOUR / per_hour
    seen: list[tuple[float, set[str]]] = []
    families = [("llama3.1-8b", "llama"), ("qwen2.5-coder-7b", "qwen"), ("mistral-7b", "mistral")]
    n = int(hours * per_hour)
    for i in range(n + 1):
        at = start + i * step
        model, family = families[i % 3]
        feed(obs, [(at, result(i, model=model, family=family, cached=hit_every > 0 and i % hit_every == 0))])
        if i % (per_hour // 4) == 0:
            obs.prune(at)
            live_now = LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b", beat=at)})
            engine.evaluate(partial(measure_at, obs, at, live_now), at)
            seen.append((at - start, set(engine.active)))
    return seen


def test_cache_hit_rate_below_twenty_percent_fires_after_six_hours_not_before() -> None:
    """The window holds the 50 requests the rule needs after 1 h; six hours of low hits later it fires."""
    obs, live = fresh()
    seen = run_hours(obs, live, 7.5, hit_every=10)  # 10 % hits
    before = [rules for t, rules in seen if t < 7 * HOUR]
    after = [rules for t, rules in seen if t >= 7 * HOUR]
    assert before and after
    assert all("cache_hit_rate_degraded" not in r for r in before)
    assert all("cache_hit_rate_degraded" in r for r in after)


def test_cache_hit_rate_at_twenty_percent_or_with_too_few_requests_stays_quiet() -> None:
    obs, live = fresh()
    assert all("cache_hit_rate_degraded" not in r for _, r in run_hours(obs, live, 8, hit_every=5))  # 20 %
    obs, live = fresh()
    sparse = run_hours(obs, live, 8, hit_every=0, per_hour=40)  # no hits but < 50 requests an hour
    assert all("cache_hit_rate_degraded" not in r for _, r in sparse)


# --- model diversity low, sustained for an hour ---------------------------------------------------
def families_for(obs: Observations, families: list[tuple[str, str]], minutes: int, start: float = NOW) -> Engine:
    engine = Engine(LAB.alerts.rules)
    for minute in range(minutes + 1):
        at = start + minute * 60
        model, family = families[minute % len(families)]
        feed(obs, [(at, result(minute, model=model, family=family, cached=True))])
        if minute % 5 == 0:
            live = LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b", beat=at)})
            engine.evaluate(partial(measure_at, obs, at, live), at)
    return engine


def test_fewer_than_three_families_for_an_hour_fires() -> None:
    obs = Observations(HOUR)
    two = [("llama3.1-8b", "llama"), ("qwen2.5-coder-7b", "qwen")]
    assert "model_diversity_low" not in families_for(obs, two, 55).active  # 20+ answers after 20 min, < 1 h held
    obs = Observations(HOUR)
    assert "model_diversity_low" in families_for(obs, two, 90).active


def test_three_families_keep_model_diversity_quiet() -> None:
    obs = Observations(HOUR)
    three = [("llama3.1-8b", "llama"), ("qwen2.5-coder-7b", "qwen"), ("mistral-7b", "mistral")]
    assert "model_diversity_low" not in families_for(obs, three, 120).active


# --- single model dominating ----------------------------------------------------------------------
def share(top: int, total: int) -> set[str]:
    obs, live = fresh()
    others = [("qwen2.5-coder-7b", "qwen"), ("mistral-7b", "mistral")]
    items = []
    for i in range(total):
        model, family = ("llama3.1-8b", "llama") if i < top else others[i % 2]
        items.append((NOW - 600 + i, result(i, model=model, family=family, cached=True)))
    feed(obs, items)
    return firing(obs, live)


def test_one_model_over_seventy_percent_of_requests_fires() -> None:
    assert share(36, 50) == {"single_model_dominating"}


def test_seventy_percent_or_fewer_than_fifty_requests_stays_quiet() -> None:
    assert share(35, 50) == set()
    assert share(45, 49) == set()  # 92 % but under min_samples


# --- the state machine ----------------------------------------------------------------------------
def test_an_alert_resolves_when_its_condition_stops_holding_and_a_new_one_gets_a_new_id() -> None:
    obs = Observations(HOUR)
    engine = Engine(LAB.alerts.rules)
    offline = LiveState()
    changes = engine.evaluate(lambda m, w: obs.measure(m, w, NOW, offline), NOW)
    assert [type(c) for c in changes] == [Raised]
    first = changes[0].alert
    assert first.alert_id == "all_models_offline-20251124T160000Z" and first.severity == "critical"
    assert engine.evaluate(lambda m, w: obs.measure(m, w, NOW + 15, offline), NOW + 15) == []
    back = LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b", beat=NOW + 29)})
    changes = engine.evaluate(lambda m, w: obs.measure(m, w, NOW + 30, back), NOW + 30)
    assert [type(c) for c in changes] == [Resolved] and first.state == "resolved"
    again = engine.evaluate(lambda m, w: obs.measure(m, w, NOW + 30, offline), NOW + 30)
    assert isinstance(again[0], Raised) and again[0].alert.alert_id == "all_models_offline-20251124T160030Z"
    assert list(engine.history) == [first]
    assert alert_id("all_models_offline", NOW, {first.alert_id}) == f"{first.alert_id}-2"


def test_unknown_figures_neither_raise_nor_resolve() -> None:
    """A firing rate-based alert stays firing while its window has too few requests."""
    obs = Observations(HOUR)
    engine = families_for(obs, [("llama3.1-8b", "llama")], 90)
    alert = engine.active["model_diversity_low"]
    later = NOW + 90 * 60 + 2 * HOUR  # the window is empty now
    live = LiveState(hosts={"m5-p40-a": host("m5-p40-a", "llama3.1-70b", beat=later)})
    assert engine.evaluate(lambda m, w: obs.measure(m, w, later, live), later) == []
    assert engine.active["model_diversity_low"] is alert and alert.open


def test_acknowledging_marks_the_alert_and_is_idempotent() -> None:
    obs = Observations(HOUR)
    engine = Engine(LAB.alerts.rules)
    engine.evaluate(lambda m, w: obs.measure(m, w, NOW, LiveState()), NOW)
    aid = engine.active["all_models_offline"].alert_id
    alert = engine.ack(aid, "ada", NOW + 5)
    assert alert is not None and alert.state == "acknowledged" and alert.acked_by == "ada"
    engine.ack(aid, "bob", NOW + 9)
    assert alert.acked_by == "ada" and alert.acked_at == NOW + 5
    assert engine.ack("no-such-alert", "ada", NOW) is None


def test_the_state_is_rebuilt_from_stored_alert_events() -> None:
    engine = Engine(LAB.alerts.rules)
    aid = alert_id("cost_spike", NOW, set())
    for ev in [
        AlertRaised(alert_id=aid, rule="cost_spike", severity="high", action="cost_spike", at=NOW),
        Remediation(
            alert_id=aid,
            rule="cost_spike",
            action="disable_tier",
            at=NOW + 1,
            commands=['{"kind":"tier.set","tier":"premium","enabled":false}'],
        ),
        Notified(alert_id=aid, channel="slack", step=0, at=NOW + 1),
        AlertAcknowledged(alert_id=aid, by="ada", at=NOW + 60),
        AlertRaised(alert_id="gpu_oom_failures-x", rule="gpu_oom_failures", severity="high", at=NOW),
        AlertResolved(alert_id="gpu_oom_failures-x", rule="gpu_oom_failures", at=NOW + 90),
    ]:
        engine.restore(ev)
    assert list(engine.active) == ["cost_spike"]
    alert = engine.active["cost_spike"]
    assert alert.remediations == ["disable_tier"] and alert.steps_done == {0} and alert.acked_by == "ada"
    assert [type(c).__name__ for c in alert.commands] == ["SetTier"]
    assert [a.alert_id for a in engine.history] == ["gpu_oom_failures-x"]
    obs = Observations(HOUR)
    obs.add_event(CostSpike(daily_usd=80.0), NOW + 100)
    changes = engine.evaluate(
        lambda m, w: obs.measure(m, w, NOW + 100, LiveState(hosts={"h": host("h", "x", beat=NOW + 100)})), NOW + 100
    )
    assert changes == []  # still firing: not raised a second time


def test_errors_count_in_the_error_rate() -> None:
    obs, live = fresh()
    for i in range(8):
        obs.add_outcome(result(i), NOW - 10)
    for i in range(2):
        obs.add_outcome(GenerateError(request_id=f"e{i}", error=ErrorInfo.of("timeout", "late")), NOW - 5)
    m = obs.measure("error_rate", HOUR, NOW, live)
    assert m.value == pytest.approx(0.2) and m.samples == 10


def test_too_few_unique_approaches_on_a_task_is_an_alert_naming_the_task() -> None:
    """diversity.low (fewer unique approaches than monitor.min_unique_approaches, §9.2.4) raises the lab's
    approaches_low alert with the task in its context, and it ends once the report is out of the hour."""
    from schemas.events import DiversityLow

    obs, live = fresh()
    assert "approaches_low" not in firing(obs, live)
    obs.add_event(DiversityLow(metric="unique_approaches", value=2.0, threshold=5.0, task="fib"), NOW - 120)
    engine = Engine(LAB.alerts.rules)
    assert "approaches_low" in firing(obs, live, engine=engine)
    assert engine.active["approaches_low"].context["low_diversity_tasks[1h] detail"] == "fib"
    later, later_live = fresh()
    later.add_event(DiversityLow(metric="unique_approaches", value=2.0, threshold=5.0, task="fib"), NOW - 4000)
    assert "approaches_low" not in firing(later, later_live)
