"""How sure is each answer? Token probabilities first, measured accuracy next, the configured rank last.

    confidence(logprobs, measured, quality) -> (value 0..1, source)

``source`` says which figure it is, so nobody mistakes a guess for a measurement:
    "logprobs"         mean probability the model gave its own tokens (llama.cpp computes them)
    "measured"         the model's measured accuracy (e.g. agreement with premium answers over a window)
    "configured_rank"  no measurement exists: the model's quality rank in models.yaml / 10, a fallback
    "none"             not even a rank: 0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from schemas.result import TokenLogprob

ConfidenceSource = Literal["logprobs", "measured", "configured_rank", "none"]


def mean_token_probability(logprobs: Sequence[TokenLogprob]) -> float | None:
    """The mean of exp(logprob) over the answer's tokens; None for an answer without tokens."""
    values = [lp.logprob for lp in logprobs if math.isfinite(lp.logprob)]
    if not values:
        return None
    return sum(math.exp(v) for v in values) / len(values)


def confidence(
    logprobs: Sequence[TokenLogprob] | None, measured: float | None, quality: int | None
) -> tuple[float, ConfidenceSource]:
    if logprobs:
        p = mean_token_probability(logprobs)
        if p is not None:
            return round(p, 4), "logprobs"
    if measured is not None:
        return round(min(1.0, max(0.0, measured)), 4), "measured"
    if quality is not None:
        return quality / 10, "configured_rank"
    return 0.5, "none"
