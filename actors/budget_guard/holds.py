"""Bounds on a hold, whoever asks for it: no reservation outlives ``budgets.max_hold`` and none is larger
than ``budgets.max_hold_usd`` (a worst case above it is refused, not cut: a smaller hold would let the
attempt spend more than was held). Pure."""

from __future__ import annotations

import msgspec

from schemas.budget import ReserveRequest


def bounded(req: ReserveRequest, now: float, max_hold_s: float, max_hold_usd: float | None) -> ReserveRequest | str:
    """The request with its deadline cut to ``now + max_hold_s``, or why it is refused."""
    if max_hold_usd is not None and req.amount_usd > max_hold_usd:
        return f"a hold of ${req.amount_usd:.4f} is more than budgets.max_hold_usd (${max_hold_usd:g})"
    latest = now + max_hold_s
    if req.deadline and req.deadline <= latest:
        return req
    return msgspec.structs.replace(req, deadline=latest)
