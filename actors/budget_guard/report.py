"""``orchestra cost report`` (pure): charges grouped by tier, model, key, provider or day, and the
comparison of charges replayed from RESULTS with the ones the ledger recorded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from policy.limits import Calendar
from policy.money import fmt_usd
from schemas.budget import Charged

By = Literal["tier", "model", "key", "provider", "day"]
BY: tuple[By, ...] = ("tier", "model", "key", "provider", "day")


@dataclass
class Line:
    label: str
    results: int = 0  # final results (fan-out parents included)
    failed: int = 0  # failed attempts
    errors: int = 0  # requests that ended in a typed error
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0

    def add(self, c: Charged) -> None:
        if c.outcome == "failed":
            self.failed += 1
        elif c.outcome == "error":
            self.errors += 1
        else:
            self.results += 1
        self.input_tokens += c.input_tokens
        self.output_tokens += c.output_tokens
        self.cost_nanos += c.cost_nanos


def label_of(c: Charged, by: By, calendar: Calendar) -> str:
    match by:
        case "tier":
            return c.tier or "-"
        case "model":
            return c.model or "-"
        case "key":
            return c.client_key or "(no key)"
        case "provider":
            return c.provider or "-"
        case "day":
            return calendar.day_key(c.at)
    raise ValueError(f"cannot group by {by!r}")  # pragma: no cover


def aggregate(charges: Iterable[Charged], by: By, calendar: Calendar) -> tuple[list[Line], Line]:
    """Lines sorted by cost (then label) and the total."""
    lines: dict[str, Line] = {}
    total = Line("total")
    for c in charges:
        label = label_of(c, by, calendar)
        lines.setdefault(label, Line(label)).add(c)
        total.add(c)
    ordered = sorted(lines.values(), key=lambda x: (-x.cost_nanos, x.label))
    return ordered, total


def render(lines: list[Line], total: Line, by: By) -> str:
    head = (by, "results", "failed", "errors", "tokens in", "tokens out", "cost")

    def cells(x: Line) -> tuple[str, ...]:
        return (
            x.label,
            str(x.results),
            str(x.failed),
            str(x.errors),
            f"{x.input_tokens:,}",
            f"{x.output_tokens:,}",
            fmt_usd(x.cost_nanos, 6),
        )

    rows = [head, *(cells(x) for x in lines), cells(total)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    out = [fmt(head), "  ".join("-" * w for w in widths)]
    out += [fmt(cells(x)) for x in lines]
    out += ["  ".join("-" * w for w in widths), fmt(cells(total))]
    return "\n".join(out)


@dataclass
class Comparison:
    """Charges replayed from RESULTS vs charges in the ledger, by key, over one window."""

    replayed: int = 0
    ledger: int = 0
    only_replayed: list[str] = field(default_factory=list)  # results the ledger has not charged (yet)
    only_ledger: list[str] = field(default_factory=list)  # charges whose result is no longer stored
    differ: list[str] = field(default_factory=list)  # same key, different amount
    replayed_nanos: int = 0
    ledger_nanos: int = 0
    since: float | None = None  # compared from here only: LEDGER holds nothing older (compacted, aged out)

    @property
    def equal(self) -> bool:
        return not (self.only_replayed or self.only_ledger or self.differ)

    def describe(self) -> str:
        text = self._describe()
        if self.since is not None:
            when = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
            text += f" (compared from {when} on: LEDGER's older entries are compacted into its snapshots)"
        return text

    def _describe(self) -> str:
        if self.equal:
            return f"ledger agrees: {self.ledger} charges, {fmt_usd(self.ledger_nanos, 6)}"
        parts = [f"ledger differs: replay {fmt_usd(self.replayed_nanos, 6)}, ledger {fmt_usd(self.ledger_nanos, 6)}"]
        if self.only_replayed:
            parts.append(f"{len(self.only_replayed)} results not charged yet (is the budget_guard running?)")
        if self.only_ledger:
            parts.append(f"{len(self.only_ledger)} charges without a stored result (older than RESULTS history?)")
        if self.differ:
            parts.append(f"{len(self.differ)} amounts differ: {', '.join(self.differ[:5])}")
        return "; ".join(parts)


def compare(replayed: dict[str, int], ledger: dict[str, int], *, since: float | None = None) -> Comparison:
    return Comparison(
        since=since,
        replayed=len(replayed),
        ledger=len(ledger),
        only_replayed=sorted(set(replayed) - set(ledger)),
        only_ledger=sorted(set(ledger) - set(replayed)),
        differ=sorted(k for k in set(replayed) & set(ledger) if replayed[k] != ledger[k]),
        replayed_nanos=sum(replayed.values()),
        ledger_nanos=sum(ledger.values()),
    )
