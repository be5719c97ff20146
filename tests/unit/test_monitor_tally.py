"""The monitor's windows are bounded aggregates: their size holds under any number of inserts, and the
figures they give match the exact ones (computed from every record) within the stated tolerance."""

from __future__ import annotations

import random

import numpy as np
import pytest

from actors.diversity_monitor.board import quantile
from actors.diversity_monitor.diversity import Answer, metrics
from actors.diversity_monitor.tally import RecentIds, Samples, Series, quantile_of
from actors.diversity_monitor.window import (
    FINE_SPAN,
    MAX_BUCKETS,
    MAX_GROUP,
    MAX_SAMPLED,
    RECENT_IDS,
    LiveState,
    Observations,
    answers_of,
    overall_counts,
)
from schemas.errors import ErrorInfo
from schemas.result import GenerateError, GenerateResult, Provenance, Timings

NOW = 1_764_000_000.0
FAMILIES = [("llama3.1-8b", "llama"), ("qwen2.5-7b", "qwen"), ("mistral-7b", "mistral")]


def outcome(i: int, rng: random.Random, task: str | None = None) -> GenerateResult | GenerateError:
    if i % 17 == 0:
        return GenerateError(request_id=f"r{i}", error=ErrorInfo(code="timeout", message="late"))
    model, family = FAMILIES[i % 3]
    tier = "together" if i % 5 == 0 else "local"
    return GenerateResult(
        request_id=f"r{i}",
        text=f"answer {i % 7}",
        model=model,
        family=family,
        tier=tier,  # type: ignore[arg-type]
        target="h",
        cost_usd=0.001 if tier == "together" else 0.0,
        cached=i % 11 == 0,
        task=task,
        timings=Timings(total_ms=rng.uniform(5, 2000)),
        provenance=Provenance(model=model, family=family, tier=tier, target="h", temperature=0.1 * (i % 9)),  # type: ignore[arg-type]
    )


def test_a_series_holds_at_most_span_over_resolution_buckets_whatever_the_rate() -> None:
    """200,000 records over three hours, pruned as the monitor does: never more than 3,600 buckets."""
    series = Series(1.0, 3600.0)
    peak = 0
    for i in range(200_000):
        at = NOW + i * (3 * 3600 / 200_000)
        series.at(at).add_request(ok=True, tier="local", latency_ms=10.0)
        if i % 1000 == 0:
            series.prune(at - 3600.0)
            peak = max(peak, len(series.buckets))
    assert 3000 < peak <= 3601
    assert series.total(NOW + 3 * 3600 - 60, NOW + 3 * 3600).requests == pytest.approx(60 * 200_000 / 10800, rel=0.05)


def test_late_records_land_in_their_own_bucket_in_time_order() -> None:
    series = Series(1.0, 3600.0)
    for at in (NOW + 5, NOW + 1, NOW + 3, NOW - 10, NOW + 3.5):
        series.at(at).add_request(ok=True)
    assert [b.start for b in series.buckets] == [NOW - 10, NOW + 1, NOW + 3, NOW + 5]
    assert series.total(NOW + 2, NOW + 4).requests == 2 and series.total(NOW - 100, NOW + 10).requests == 5


def test_latency_quantiles_are_within_one_percent_of_the_exact_ones() -> None:
    rng = random.Random(7)
    series = Series(1.0, 3600.0)
    values = [rng.lognormvariate(4, 1.5) for _ in range(20_000)]
    for k, v in enumerate(values):
        series.at(NOW + k / 100).add_request(ok=True, tier="local", latency_ms=v)
    hist = series.total(NOW - 1, NOW + 300).tiers["local"].latency
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        assert quantile_of(hist, q) == pytest.approx(quantile(values, q), rel=0.0101)


def test_samples_keep_the_most_recent_answers_per_group_within_every_cap() -> None:
    samples = Samples(per_group=5, groups=3, total=12)
    for i in range(1000):  # five groups in turn: each new one pushes the least recently answered out
        samples.add(Answer(at=NOW + i, request_id=f"a{i}", model="m", family="f", group=f"g{i % 5}"))
        assert len(samples.groups) <= 3 and samples.count <= 12
        assert all(len(q) <= 5 for q in samples.groups.values())
    assert list(samples.groups) == ["g2", "g3", "g4"]
    many = Samples(per_group=5, groups=10, total=12)
    for i in range(1000):  # two groups: five each, the per-group cap
        many.add(Answer(at=NOW + i, request_id=f"a{i}", model="m", family="f", group=f"g{i % 2}"))
    assert [a.request_id for a in many.groups["g1"]] == [f"a{i}" for i in range(991, 1000, 2)]
    for i in range(1000):  # four groups: the total cap takes the oldest answers of the stalest group
        many.add(Answer(at=NOW + i, request_id=f"b{i}", model="m", family="f", group=f"h{i % 4}"))
    assert many.count == 12 == sum(len(q) for q in many.groups.values())
    assert many.groups["h3"][-1].request_id == "b999"
    samples.add(Answer(at=NOW, request_id="x", model="m", family="f"))  # no group: nothing to compare it with
    assert samples.count == sum(len(q) for q in samples.groups.values())


def test_sampled_vectors_live_in_one_matrix_made_once_and_rows_come_back_as_answers_leave() -> None:
    """Answers come and go through every cap (per group, groups, total, the horizon): each sampled answer
    still has exactly the vector it came with, every one a row of the one matrix, one row per answer."""
    rng = np.random.default_rng(7)
    samples = Samples(per_group=5, groups=4, total=12)
    sent: dict[str, np.ndarray] = {}
    for i in range(2000):
        vector = rng.standard_normal(8).astype(np.float32)
        sent[f"a{i}"] = vector
        samples.add(Answer(at=NOW + i, request_id=f"a{i}", model="m", family="f", group=f"g{i % 6}", vector=vector))
        if i % 97 == 0:
            samples.prune(NOW + i - 3)  # the horizon takes some too
        matrix = samples.vectors.matrix
        assert matrix is not None and matrix.shape == (13, 8)
        kept = [a for q in samples.groups.values() for a in q]
        assert len(samples.vectors.row_of) == len(kept) == samples.count <= 12
        assert len(samples.vectors.free) == 13 - len(kept)
        for a in kept:
            assert a.vector.base is matrix and np.array_equal(a.vector, sent[a.request_id])
    no_vector = Answer(at=NOW, request_id="t", model="m", family="f", group="g0")
    other_width = Answer(at=NOW, request_id="w", model="m", family="f", group="g0", vector=np.ones(3))
    assert samples.vectors.keep(no_vector) is no_vector and samples.vectors.keep(other_width) is other_width


def test_recent_ids_forget_the_oldest_beyond_their_cap() -> None:
    ids = RecentIds(cap=100)
    assert all(ids.claim(f"k{i}") for i in range(1000))
    assert len(ids) == 100 and not ids.claim("k999") and ids.claim("k0")


def test_observations_stay_bounded_and_agree_with_the_exact_figures() -> None:
    """A long run at a high rate: every structure stays under its cap; rates, errors, hits, spend and the
    answer mix over the last hour match the figures counted from every record."""
    rng = random.Random(3)
    obs = Observations(3600.0)
    rate = 10.0  # per second, for three hours of simulated time
    n = int(3 * 3600 * rate)
    records = []
    for i in range(n):
        at = NOW + i / rate
        o = outcome(i, rng, task=f"t{i % 900}" if i % 2 else None)
        obs.add_outcome(o, at)
        obs.add_answers(answers_of(o, at))
        records.append((at, o))
        if i % 4000 == 0:
            obs.prune(at)
    end = NOW + (n - 1) / rate
    obs.prune(end)
    assert len(obs.recent.buckets) <= MAX_BUCKETS + 1 and obs.long is None
    assert obs.samples.count <= MAX_SAMPLED and all(len(q) <= MAX_GROUP for q in obs.samples.groups.values())
    assert len(obs.seen) <= RECENT_IDS
    since = end - 3600.0
    window = [(at, o) for at, o in records if since < at <= end]
    ok = [o for _, o in window if isinstance(o, GenerateResult)]
    live = LiveState()
    rate_m = obs.measure("request_rate", 3600.0, end, live)
    assert rate_m.samples == pytest.approx(len(window), abs=rate)  # one 1 s bucket at the edge
    errors = obs.measure("error_rate", 3600.0, end, live).value
    assert errors == pytest.approx((len(window) - len(ok)) / len(window), rel=0.01)
    hits = obs.measure("cache_hit_rate", 3600.0, end, live).value
    assert hits == pytest.approx(sum(o.cached for o in ok) / len(window), rel=0.01)
    spend = obs.measure("spend_velocity", 3600.0, end, live).value
    assert spend == pytest.approx(sum(o.cost_usd for o in ok if o.tier == "together"), rel=0.01)
    assert obs.measure("model_families", 3600.0, end, live).value == 3.0
    share = obs.measure("top_model_share", 3600.0, end, live).value
    assert share == pytest.approx(1 / 3, rel=0.01)
    summary = obs.summary(since, end)
    assert summary.overall["answers"] == pytest.approx(len(ok), abs=rate)
    assert 0 < len(summary.tasks) <= 1000 and all(m.answers <= MAX_GROUP for m in summary.tasks.values())


def test_overall_counts_are_the_figures_metrics_gives_for_the_same_answers() -> None:
    answers = [
        Answer(at=NOW + i, request_id=f"a{i}", model=m, family=f, temperature=0.2 * i, prompt_variant=f"v{i % 2}")
        for i, (m, f) in enumerate(FAMILIES * 4)
    ]
    obs = Observations(3600.0)
    obs.store(answers)
    exact = metrics(answers).as_dict()
    counts = overall_counts(obs.total(NOW - 1, NOW + 100))
    for key in ("answers", "model_families", "models", "top_model_share", "family_evenness", "prompt_variants"):
        assert counts[key] == exact[key], key
    assert counts["temperature_variance"] == pytest.approx(exact["temperature_variance"], abs=1e-6)


def test_a_horizon_longer_than_an_hour_gets_coarser_buckets_and_keeps_the_last_hour_fine() -> None:
    obs = Observations(6 * 3600.0)
    assert obs.long is not None and obs.long.resolution == 6.0 and obs.recent.span == FINE_SPAN
    for i in range(6 * 3600):
        obs.add_outcome(GenerateError(request_id=f"e{i}", error=ErrorInfo(code="x", message="")), NOW + i)
    obs.prune(NOW + 6 * 3600)
    assert len(obs.long.buckets) <= MAX_BUCKETS + 1 and len(obs.recent.buckets) <= FINE_SPAN + 1
    assert obs.measure("request_rate", 60.0, NOW + 6 * 3600 - 1, LiveState()).samples == pytest.approx(60, abs=1)
    assert obs.measure("request_rate", 5 * 3600.0, NOW + 6 * 3600 - 1, LiveState()).samples == pytest.approx(
        5 * 3600, abs=6
    )
