"""The lab's Grafana dashboard (docs/grafana/orchestra.json) queries only metrics the diversity_monitor's
exposition really has: every panel's PromQL is checked against the registry's own exposition after it saw
results, failures, events, remediations and notifications. (tests/integration/test_dashboard.py checks it
again against a running monitor's /metrics.)"""

from __future__ import annotations

import json

from actors.diversity_monitor.metrics import Figures, Metrics
from schemas.errors import ErrorInfo
from schemas.result import AttemptFailed, GenerateError, GenerateResult, Timings, Usage
from tests.support.grafana import DASHBOARD, exposed, metrics_of, queries


def figures() -> Figures:
    return Figures(
        models={("smollm2-135m", "local"): True},
        models_loaded=1,
        hosts_up=1,
        cards={("cpu0", "cpu0"): (10, 100)},
        queues={"local:cpu0:smollm2-135m": (3, 1.5)},
        tiers={"local": True},
        window={"cache_hit_ratio": 0.5, "error_ratio": 0.1, "request_rate_per_second": 2.0},
        spend_today=1.0,
        spend_velocity=0.5,
        diversity={"diversity_score": 0.4, "model_families": 2.0, "top_model_share": 0.6, "answers": 4.0},
        tasks={"fib": 0.4},
        families={"smollm": 3, "gemma": 1},
        alerts=[("cost_spike", "high")],
    )


def exposition() -> str:
    m = Metrics(figures)
    usage = Usage(input_tokens=10, output_tokens=20)
    m.observe(
        GenerateResult(
            request_id="r1",
            text="hi",
            model="smollm2-135m",
            family="smollm",
            tier="local",
            target="cpu0",
            usage=usage,
            timings=Timings(total_ms=120.0),
        )  # fmt: skip
    )
    m.observe(GenerateError(request_id="r2", error=ErrorInfo(code="timeout", message="late")))
    m.observe_failure(
        AttemptFailed(
            request_id="r3",
            attempt=1,
            model="gpt-4o",
            tier="premium",
            target="openai",
            error=ErrorInfo(code="rate_limited", message="429"),
        )  # fmt: skip
    )
    m.events.labels("model.loaded").inc()
    m.remediations.labels("cost_spike", "disable_premium").inc()
    m.notifications.labels("slack", "ok").inc()
    return m.exposition().decode()


def test_every_panel_queries_only_metrics_the_exposition_has() -> None:
    """Each panel has a query, each query names an orchestra metric, and every name is exposed."""
    names = exposed(exposition())
    panels = queries()
    assert len(panels) >= 20
    missing = {}
    for title, exprs in panels.items():
        assert exprs, f"panel {title!r} has no query"
        for expr in exprs:
            used = metrics_of(expr)
            assert used, f"panel {title!r}: {expr!r} names no orchestra metric"
            if used - names:
                missing[title] = sorted(used - names)
    assert not missing, f"panels query metrics the exposition lacks: {missing}"


def test_the_dashboard_covers_the_pages_panels_and_picks_its_datasource() -> None:
    """The same panels as /dashboard (cards, tokens, requests, latency, queue, cache, diversity, family mix,
    money, tiers, alerts, remediations), on a Prometheus datasource chosen at import."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for es in queries().values() for e in es)
    for metric in (
        "orchestra_card_memory_used_bytes",
        "orchestra_tokens_total",
        "orchestra_requests_total",
        "orchestra_request_latency_seconds_bucket",
        "orchestra_queue_depth",
        "orchestra_cache_hit_ratio",
        "orchestra_diversity_score",
        "orchestra_diversity_family_answers",
        "orchestra_spend_today_usd",
        "orchestra_cost_per_request_usd_sum",
        "orchestra_tier_enabled",
        "orchestra_alerts_firing",
        "orchestra_remediations_total",
    ):
        assert metric in exprs, metric
    assert doc["templating"]["list"][0]["type"] == "datasource"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in doc["panels"] if p["type"] != "row")
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
