"""What a call costs, in US dollars: pure functions of the pricing table and usage.

cloud_cost(model, usage)                       input x price.input + output x price.output (per 1M)
local_cost(model, usage, local_cost, seconds, watts)   per-million figure, or electricity
worst_case_cost(model, prompt_tokens, max_tokens, ...)  what a reservation must cover
estimate_tokens(text)                          a conservative count before the model tokenises
"""

from __future__ import annotations

import math

from schemas.config.models import CloudModel, LocalModel
from schemas.config.ops import LocalCostCfg
from schemas.result import Usage

PER_MILLION = 1_000_000


def cloud_cost(model: CloudModel, usage: Usage) -> float:
    return (usage.input_tokens * model.price.input + usage.output_tokens * model.price.output) / PER_MILLION


def local_cost(
    model: LocalModel,
    usage: Usage,
    local: LocalCostCfg,
    *,
    seconds: float = 0.0,
    watts: float = 0.0,
) -> float:
    """A model's own per-million figure wins; else the profile's mode (per million, or electricity
    = card watts x generation time x $/kWh)."""
    if model.price_per_million is not None:
        return usage.total_tokens * model.price_per_million / PER_MILLION
    if local.mode == "electricity":
        return watts * seconds / 3600.0 / 1000.0 * local.kwh_usd
    return usage.total_tokens * local.per_million_usd / PER_MILLION


def worst_case_cost(model: CloudModel | LocalModel, prompt_tokens: int, max_tokens: int, local: LocalCostCfg) -> float:
    usage = Usage(input_tokens=prompt_tokens, output_tokens=max_tokens)
    if isinstance(model, CloudModel):
        return cloud_cost(model, usage)
    return local_cost(model, usage, local)


def estimate_tokens(text: str) -> int:
    """Upper-side estimate before tokenisation: ~3 characters per token for English and code."""
    return max(1, math.ceil(len(text) / 3))
