"""The paper's cost arithmetic, recomputed from the lab profile's prices: where it holds and where not."""

from __future__ import annotations

import pytest

from actors.budget_guard.simulate import Span, Workload, render, simulate
from schemas.config import load_config

LAB = load_config("lab")
SIM = simulate(Workload(), LAB)


def value(section: str, what: str) -> Span:
    v = SIM.row(section, what).value
    assert v is not None
    return v


def verdict(section: str, what: str) -> str:
    return SIM.row(section, what).verdict


def test_section_8_1_monthly_cost_at_100m_and_200m_tokens() -> None:
    """§8.1: Together llama 70B $88 / $176; local $0.30 / $0.60 (the paper's $0.40 is wrong);
    ROI of $600 = 6.8 / 3.4 months."""
    assert value("§8.1", "together/llama3.1-70b @ 100M tokens/month").lo == pytest.approx(88.00)
    assert value("§8.1", "local llama3.1-70b @ 100M tokens/month").lo == pytest.approx(0.30)
    assert value("§8.1", "savings @ 100M tokens/month").lo == pytest.approx(87.70)
    assert value("§8.1", "ROI of +2 P40s @ 100M tokens/month").lo == pytest.approx(6.82, abs=0.01)
    assert value("§8.1", "together/llama3.1-70b @ 200M tokens/month").lo == pytest.approx(176.00)
    assert value("§8.1", "local llama3.1-70b @ 200M tokens/month").lo == pytest.approx(0.60)
    assert verdict("§8.1", "local llama3.1-70b @ 200M tokens/month") == "WRONG"
    assert value("§8.1", "savings @ 200M tokens/month").lo == pytest.approx(175.40)
    assert verdict("§8.1", "savings @ 200M tokens/month") == "WRONG"
    assert value("§8.1", "ROI of +2 P40s @ 200M tokens/month").lo == pytest.approx(3.41, abs=0.01)
    assert verdict("§8.1", "ROI of +2 P40s @ 200M tokens/month") == "ok"
    assert verdict("§8.1", '"pays for itself vs Together AI in 3-6 months"') == "WRONG"  # 3.4-6.8


def test_section_8_2_premium_validation_costs() -> None:
    assert value("§8.2", "gpt-4o @ 20M tokens").lo == pytest.approx(22.00)
    assert value("§8.2", "gemini-2.5-pro @ 10M tokens").lo == pytest.approx(12.50)
    assert value("§8.2", "claude-sonnet @ 6M tokens").lo == pytest.approx(18.00)
    assert value("§8.2", "premium APIs per month").lo == pytest.approx(52.50)
    assert verdict("§8.2", "premium APIs per month") == "ok"
    together = value("§8.2", 'Together "conservative" (10-20M tokens at $0.80-1.20/M)')
    assert (together.lo, together.hi) == pytest.approx((8.0, 24.0))  # not $20-40


def test_section_8_3_options_a_and_b_and_the_roi_of_two_more_p40s() -> None:
    """A = $142.50-192.50 and B = $112.50-122.50 agree with the paper; the savings between them are
    $30-70/month, not $80-140, so $600 pays back in 8.6-20 months, not 4-8."""
    a = value("§8.3", "option A: 4x P40 (Together 56.8-113.6M tokens)")
    b = value("§8.3", "option B: +2 P40s (Together 11.4-22.7M tokens)")
    assert (a.lo, a.hi) == pytest.approx((142.50, 192.50))
    assert (b.lo, b.hi) == pytest.approx((112.50, 122.50))
    saving = value("§8.3", "monthly savings of option B")
    assert (saving.lo, saving.hi) == pytest.approx((30.0, 70.0))
    roi = value("§8.3", 'ROI of +2 P40s ("4-8 months", "<8 months")')
    assert (roi.lo, roi.hi) == pytest.approx((8.57, 20.0), abs=0.01)
    yearly = value("§8.3", "savings per year after ROI")
    assert (yearly.lo, yearly.hi) == pytest.approx((360.0, 840.0))
    for what in ("monthly savings of option B", 'ROI of +2 P40s ("4-8 months", "<8 months")'):
        assert verdict("§8.3", what) == "WRONG"


def test_section_11_2_and_1_2_cloud_only_vs_hybrid() -> None:
    """Option B saves 95.9-97.8% against the paper's $3,000-5,000 (its 95-98% holds); the whole
    hybrid range $112.50-192.50 saves only 93.6% at worst; $3,000-5,000 does not follow from
    200M tokens at $0.50-15.00/M ($100-3,000); §11.2's savings/ROI/annual figures are wrong."""
    vs_b = value("§11.2", "option B vs cloud-only $3,000-$5,000/month")
    assert (vs_b.lo, vs_b.hi) == pytest.approx((0.9592, 0.9775), abs=1e-4)
    assert verdict("§11.2", "option B vs cloud-only $3,000-$5,000/month") == "ok"
    hybrid = value("§1.2", "hybrid vs cloud-only")
    assert hybrid.lo == pytest.approx(0.9358, abs=1e-4) and verdict("§1.2", "hybrid vs cloud-only") == "WRONG"
    cloud = value("§1.2", "cloud-only 200M tokens at $0.50-15.00/M")
    assert (cloud.lo, cloud.hi) == pytest.approx((100.0, 3000.0))
    for what in ('"Savings: $55-85/month after expansion"', "ROI (also §1.4)", "annual savings after ROI"):
        assert verdict("§11.2", what) == "WRONG"
    own = value("§11.2", "cloud-only at the paper's own prices (200M on Together + premium)")
    assert own.lo == pytest.approx(228.50)


def test_local_cost_per_token_from_the_bill_and_from_the_cards() -> None:
    """$40/month over 100-200M tokens is $0.20-0.40/M; 2 x 250 W at 30 tokens/s and $0.15/kWh is $0.69/M."""
    eff = value("§1.2", 'local "$0.001-0.003 per million tokens"')
    assert (eff.lo, eff.hi) == pytest.approx((0.20, 0.40))
    assert value("§8.1", "llama3.1-70b energy per million tokens").lo == pytest.approx(0.694, abs=0.001)


def test_the_table_names_every_wrong_figure_and_a_custom_workload_is_recomputed() -> None:
    text = render(SIM, is_paper=True)
    assert "13 of the paper's figures do not follow from its own numbers" in text
    assert "$0.40" in text and "$0.60" in text and "8.6-20.0 months" in text
    custom = simulate(Workload(volumes_m=[50.0], premium_m={"gpt-4o": 10.0}, output_share=0.5), LAB)
    gpt = custom.row("§8.2", "gpt-4o @ 10M tokens").value
    assert gpt is not None and gpt.lo == pytest.approx(10 * (1.10 + 4.40) / 2)
    together = custom.row("§8.1", "together/llama3.1-70b @ 50M tokens/month").value
    assert together is not None and together.lo == pytest.approx(44.0)
    assert "no checks" in render(custom, is_paper=False)


def test_the_local_profile_prices_its_own_models_and_a_model_it_lacks_names_the_flag() -> None:
    """The local profile has no llama3.1-70b: its best local model stands in (SmolLM2 at the profile's
    $0.001/M), Together stays the paper's; a model the profile lacks is an error naming the flag."""
    local = load_config("local")
    sim = simulate(Workload(), local)
    assert (sim.workload.local_model, sim.workload.together_model) == ("smollm2-135m", "together/llama3.1-70b")
    row = sim.row("§8.1", "local smollm2-135m @ 100M tokens/month").value
    assert row is not None and row.lo == pytest.approx(100 * 0.001)
    assert "the prices of profile 'local'" in render(sim, is_paper=False, why_unchecked="the prices of profile 'local'")
    gemma = simulate(Workload(local_model="gemma3-270m"), local)
    assert gemma.row("§8.1", "local gemma3-270m @ 200M tokens/month").value is not None
    with pytest.raises(
        ValueError, match="--local-model: 'llama3.1-70b' is not a local model of profile 'local'"
    ) as exc:
        simulate(Workload(local_model="llama3.1-70b"), local)
    assert "smollm2-135m, gemma3-270m" in str(exc.value)
    assert simulate(Workload(), LAB).workload.local_model == "llama3.1-70b"  # the paper's, where the profile has it
