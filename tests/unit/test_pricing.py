"""Pricing: the paper's table, to the cent."""

from __future__ import annotations

import pytest

from actors.pricing import cloud_cost, estimate_tokens, local_cost, worst_case_cost
from schemas.config import load_config
from schemas.config.models import CloudModel, LocalModel
from schemas.config.ops import LocalCostCfg
from schemas.result import Usage

LAB = load_config("lab")


def _cloud(name: str) -> CloudModel:
    model = LAB.models[name]
    assert isinstance(model, CloudModel)
    return model


@pytest.mark.parametrize(
    ("model", "input_tokens", "output_tokens", "usd"),
    [
        ("gpt-4o", 20_000_000, 0, 22.00),  # §8.2: ~20M tokens/month of GPT-4o = ~$22
        ("gemini-2.5-pro", 10_000_000, 0, 12.50),  # §8.2: ~10M tokens = ~$12.50
        ("claude-sonnet", 6_000_000, 0, 18.00),  # §8.2: ~6M tokens = ~$18
        ("together/llama3.1-70b", 50_000_000, 50_000_000, 88.00),  # §8.1: 100M x $0.88/M
        ("gpt-4o", 1000, 500, 0.0033),
    ],
)
def test_cloud_costs_match_the_papers_table(model: str, input_tokens: int, output_tokens: int, usd: float) -> None:
    cost = cloud_cost(_cloud(model), Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    assert cost == pytest.approx(usd, abs=1e-9)


def test_local_cost_uses_the_models_own_figure_then_the_profile() -> None:
    llama70 = LAB.models["llama3.1-70b"]
    small = LAB.models["llama3.1-8b"]
    assert isinstance(llama70, LocalModel) and isinstance(small, LocalModel)
    usage = Usage(input_tokens=60_000_000, output_tokens=40_000_000)
    assert local_cost(llama70, usage, LAB.budgets.local_cost) == pytest.approx(0.30)  # §8.1: $0.30 at 100M
    assert local_cost(small, usage, LAB.budgets.local_cost) == pytest.approx(0.10)


def test_electricity_mode_prices_watts_times_time() -> None:
    small = LAB.models["llama3.1-8b"]
    assert isinstance(small, LocalModel)
    cfg = LocalCostCfg(mode="electricity", kwh_usd=0.15)
    # a 250 W card busy for one hour at $0.15/kWh
    assert local_cost(small, Usage(), cfg, seconds=3600, watts=250) == pytest.approx(0.0375)


def test_worst_case_covers_max_tokens_at_the_output_price() -> None:
    gpt = _cloud("gpt-4o")
    assert worst_case_cost(gpt, 1000, 1000, LAB.budgets.local_cost) == pytest.approx((1000 * 1.10 + 1000 * 4.40) / 1e6)


def test_token_estimate_is_never_zero_and_errs_high() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("hello world, this is a prompt") >= 7
