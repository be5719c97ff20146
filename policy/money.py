"""Money on the ledger: integer nano-dollars (1 USD = 10**9), so that sums never drift.

A result's ``cost_usd`` (a float) is rounded once, to the nearest nano-dollar, where it enters the
ledger; every sum after that is exact. A single token of a local model at the paper's $0.001 per
million tokens is one nano-dollar, so even electricity costs stay visible.
"""

from __future__ import annotations

import math

NANOS = 1_000_000_000


def to_nanos(usd: float) -> int:
    if not math.isfinite(usd):
        raise ValueError(f"not a finite amount of money: {usd!r}")
    return round(usd * NANOS)


def fmt_usd(nanos: int, places: int = 2) -> str:
    """'$1,234.57'; small amounts keep enough places to stay visible ('$0.000003')."""
    usd = nanos / NANOS
    if nanos and abs(usd) < 10 ** (-places):
        return f"${usd:.9f}".rstrip("0")
    return f"${usd:,.{places}f}"
