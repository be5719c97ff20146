"""What the dashboard shows, as pure functions of plain data: chart points (rates, latency quantiles per
tier, queue depth per model, the family mix), the page state (memory per card stacked by model, the next
rotation, money, alerts) and the bounded memory behind it (ring buffers)."""

from __future__ import annotations

import pytest

from actors.diversity_monitor.board import Board, point, quantile, snapshot
from actors.diversity_monitor.diversity import Answer
from actors.diversity_monitor.metrics import Figures
from actors.diversity_monitor.rules import Alert
from actors.diversity_monitor.window import LiveState, Observations
from schemas.budget import LedgerSummary, LimitStatus
from schemas.config import load_config
from schemas.errors import ErrorInfo
from schemas.events import ModelLoaded, RequestRouted
from schemas.result import AttemptFailed, GenerateError, GenerateResult, Timings, Usage
from schemas.state import CardState, HostState, LoadedModel, PhaseState, QueueState, TierState

NOW = 1_800_000_000.0
MB = 10**6


def result(rid: str, tier: str, ms: float, cost: float = 0.0, cached: bool = False) -> GenerateResult:
    return GenerateResult(
        request_id=rid, text="ok", model="m", family="f", tier=tier, target="cpu0", cached=cached,  # type: ignore[arg-type]
        usage=Usage(input_tokens=1, output_tokens=1), cost_usd=cost, timings=Timings(total_ms=ms),
    )  # fmt: skip


def live() -> LiveState:
    host = HostState(
        host="gpu-a",
        heartbeat_at=NOW - 1,
        cards=[CardState(card="P40_0", total_bytes=24_000 * MB, used_bytes=20_000 * MB),
               CardState(card="P40_1", total_bytes=24_000 * MB, used_bytes=18_000 * MB)],
        models=[
            LoadedModel(model="llama-70b", bytes=36_000 * MB, cards=["P40_0", "P40_1"],
                        card_bytes=[19_000 * MB, 17_000 * MB], keep_alive="hot", tokens_per_s=8.0, queue_depth=3),
            LoadedModel(model="phi-3", bytes=1_000 * MB, cards=["P40_0"], keep_alive="warm", tokens_per_s=40.0),
        ],
    )  # fmt: skip
    queue = QueueState(target="local:gpu-a:llama-70b", depth=12, updated_at=NOW - 1)
    premium = TierState(tier="premium", enabled=False, reason="cost spike", until=NOW + 3600)
    return LiveState(hosts={"gpu-a": host}, queues={queue.target: queue}, tiers={"premium": premium})


def test_a_point_has_rates_and_latency_quantiles_per_tier_over_the_rate_window() -> None:
    """Requests/s by tier (cache hits apart), p50/p99 of answered ones, tokens/s and queues per model."""
    obs = Observations(3600)
    obs.add_outcome(result("old", "premium", ms=5000.0), NOW - 120)  # outside the minute
    for i in range(100):
        obs.add_outcome(result(f"r{i}", "local", ms=10.0 * (i + 1)), NOW - 30 + i * 0.1)
    obs.add_outcome(result("c1", "local", ms=1.0, cached=True), NOW - 5)
    obs.store([Answer(at=NOW - 10, request_id="a", model="m", family="llama"),
               Answer(at=NOW - 9, request_id="b", model="m", family="llama"),
               Answer(at=NOW - 8, request_id="c", model="n", family="phi")])  # fmt: skip
    p = point(NOW, obs, live(), None, rate_window=60.0, window=3600.0)
    assert p["requests_per_s"] == pytest.approx({"local": 100 / 60, "cache": 1 / 60}, rel=1e-3)  # 4 digits
    assert p["p50_s"] == pytest.approx({"local": 0.5}, rel=0.01)  # a log histogram: within 1 %
    assert p["p99_s"] == pytest.approx({"local": 0.99}, rel=0.01)
    assert p["tokens_per_s"] == {"llama-70b": 8.0, "phi-3": 40.0}
    assert p["queue_depth"] == {"llama-70b": 12.0}
    assert p["cache_hit_rate"] == pytest.approx(1 / 101, rel=1e-3) and p["families"] == {"llama": 2.0, "phi": 1.0}
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0 and quantile([5.0], 0.99) == 5.0


def test_the_state_stacks_memory_per_card_by_model_and_says_when_the_next_rotation_is() -> None:
    """A split model counts its own bytes on each card; the phase's next rotation is last + frequency."""
    cfg = load_config("local")
    obs = Observations(3600)
    obs.add_outcome(result("p1", "premium", ms=900, cost=0.02), NOW - 60)
    obs.add_outcome(result("p2", "premium", ms=900, cost=0.04), NOW - 50)
    phase = PhaseState(phase="phase_1_subject_expertise", rotation={"primary": ["smollm2-135m"]}, rotated_at=NOW - 600)
    budgets = LedgerSummary(
        charges=2, spent_nanos=60_000_000, digest="", open_reservations=0, held_nanos=0,
        limits=[LimitStatus(scope="total:daily", period_key="2027-01-15", spent_usd=0.06, held_usd=0.0,
                            hard_usd=5.0, soft=[0.5, 0.8])],
    )  # fmt: skip
    alert = Alert(alert_id="cost_spike-1", rule="cost_spike", severity="high", raised_at=NOW - 30, context={"x": 1.5})
    f = Figures(models_loaded=2, spend_today=0.06, alerts=[("cost_spike", "high")])
    s = snapshot(cfg, f, live(), phase, budgets, [alert], obs, Board(10, 10), NOW)
    p40 = {c["card"]: c for c in s["cards"]}
    on_p40_0 = [(m["model"], m["bytes"]) for m in p40["P40_0"]["models"]]
    assert on_p40_0 == [("llama-70b", 19_000 * MB), ("phi-3", 1_000 * MB)]
    assert [(m["model"], m["bytes"]) for m in p40["P40_1"]["models"]] == [("llama-70b", 17_000 * MB)]
    assert {m["model"]: m["keep_alive"] for m in s["models"]} == {"llama-70b": "hot", "phi-3": "warm"}
    assert s["phase"]["next_rotation_at"] == NOW - 600 + 12 * 3600
    assert s["headline"]["models_loaded"] == 2 and s["headline"]["alerts_open"] == 1
    money = s["money"]
    assert money["guard"] and money["budgets"][0]["soft"] == [0.5, 0.8]
    assert money["cost_per_request_usd"] == {"premium": 0.03}
    assert money["disabled"] == [{"tier": "premium", "reason": "cost spike", "until": NOW + 3600}]
    assert s["alerts"][0]["alert_id"] == "cost_spike-1" and s["alerts"][0]["context"] == {"x": "1.5"}


def test_the_board_is_bounded_and_its_tail_keeps_events_errors_and_paid_answers() -> None:
    """Ring buffers whatever the traffic; local answers stay out of the tail, errors carry their ids."""
    board = Board(history_points=5, tail=10)
    obs = Observations(3600)
    for i in range(50):
        board.sample(NOW + i, obs, LiveState(), None, 60.0, 3600.0)
        board.note(ModelLoaded(host="cpu0", model="m", instance=0, at=NOW + i), NOW + i)
    assert len(board.points) == 5 and board.points[-1]["t"] == NOW + 49 and len(board.tail) == 10
    assert board.note_outcome(result("l1", "local", ms=5), NOW) is None
    paid = board.note_outcome(result("p1", "together", ms=5, cost=0.5), NOW)
    assert paid is not None and paid["request_id"] == "p1" and "cost=$0.5" in paid["text"]
    error = board.note_outcome(GenerateError(request_id="e1", error=ErrorInfo(code="timeout", message="late")), NOW)
    assert error is not None and error["kind"] == "result.error" and error["request_id"] == "e1"
    failed = AttemptFailed(request_id="f1", attempt=1, model="gpt-4o", tier="premium", target="openai",
                           error=ErrorInfo(code="rate_limited", message="429"))  # fmt: skip
    assert board.note_outcome(failed, NOW)["request_id"] == "f1"  # type: ignore[index]
    routed = board.note(RequestRouted(request_id="r9", model="m", tier="local", target="cpu0"), NOW)  # type: ignore[arg-type]
    assert routed["request_id"] == "r9" and routed["kind"] == "request.routed"
