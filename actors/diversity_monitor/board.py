"""What the dashboard page shows, assembled from plain data. Pure: time is passed in, no I/O.

    board = Board(history_points=1800, tail=200)
    board.sample(now, obs, live, summary, rate_window)     one chart point per refresh (ring buffer)
    board.note(event, at)                                   an event for the live tail / remediations
    snapshot(cfg, figures, live, phase, budgets, alerts, board, now) -> dict   cards, models, money, alerts

Everything the page gets is JSON-ready (str keys, floats, lists); the memory it takes is bounded by the
ring buffers' sizes whatever the traffic.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from actors.diversity_monitor.diversity import Summary
from actors.diversity_monitor.metrics import Figures
from actors.diversity_monitor.rules import Alert
from actors.diversity_monitor.tally import quantile_of
from actors.diversity_monitor.window import PAID_TIERS, LiveState, Observations
from schemas.budget import LedgerSummary
from schemas.config.root import OrchestraConfig
from schemas.events import Event, Remediation
from schemas.result import AttemptFailed, GenerateResult, Outcome
from schemas.state import PhaseState

MAX_REMEDIATIONS = 20


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (values need not be sorted)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


def model_of(target: str) -> str:
    """The model of a queue target (``local:cpu0:smollm2-135m`` -> ``smollm2-135m``)."""
    return target.rsplit(":", 1)[-1]


def point(
    now: float, obs: Observations, live: LiveState, summary: Summary | None, rate_window: float, window: float
) -> dict[str, Any]:
    """One chart point: rates and latencies over the trailing ``rate_window``, gauges as they are now,
    the family mix over the monitor's ``window`` (as its diversity figures)."""
    recent = obs.total(now - rate_window, now)
    p50: dict[str, float] = {}
    p99: dict[str, float] = {}
    for tier, t in obs.latencies(now - rate_window, now).tiers.items():
        if t.answered:
            p50[tier] = (quantile_of(t.latency, 0.5) or 0.0) / 1000
            p99[tier] = (quantile_of(t.latency, 0.99) or 0.0) / 1000
    tokens: dict[str, float] = {}
    for h in live.hosts_up(now):
        for m in h.models:
            tokens[m.model] = tokens.get(m.model, 0.0) + m.tokens_per_s
    queues: dict[str, float] = {}
    for q in live.current_queues(now):
        queues[model_of(q.target)] = queues.get(model_of(q.target), 0.0) + q.depth
    overall = summary.overall if summary is not None else {}
    families = {f: float(n) for f, n in obs.total(now - window, now).families.items()}
    return {
        "t": round(now, 3),
        "tokens_per_s": _rounded(tokens),
        "requests_per_s": _rounded({t: n / rate_window for t, n in recent.by_label.items()}),
        "p50_s": _rounded(p50),
        "p99_s": _rounded(p99),
        "queue_depth": queues,
        "cache_hit_rate": _sig(recent.cached / recent.requests if recent.requests else None),
        "diversity_score": _sig(overall.get("diversity_score")),
        "families": families,
    }


def _sig(x: float | None) -> float | None:
    """Four significant digits: what a chart shows, and a third of the bytes of a full float."""
    return None if x is None else float(f"{x:.4g}")


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.4g}") for k, v in values.items()}


def tail_line(ev: Event, at: float) -> dict[str, Any]:
    """An event for the live tail: its kind, when, what it says in short, and the request it is about."""
    fields = msgspec.to_builtins(ev)
    kind = str(type(ev).__struct_config__.tag)
    skip = {"kind", "at", "source", "created_at"}
    text = " ".join(
        f"{k}={_short(v)}" for k, v in fields.items() if k not in skip and v not in (None, "", [], {}, 0, 0.0)
    )
    return {
        "at": at,
        "kind": kind,
        "source": fields.get("source") or "",
        "text": text[:240],
        "request_id": fields.get("request_id") or None,
    }


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = msgspec.json.encode(value).decode() if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Board:
    """The page's memory: chart points, the event tail and the last remediations, each a ring buffer."""

    def __init__(self, history_points: int, tail: int) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=max(2, history_points))
        self.tail: deque[dict[str, Any]] = deque(maxlen=tail)
        self.remediations: deque[dict[str, Any]] = deque(maxlen=MAX_REMEDIATIONS)

    def sample(
        self, now: float, obs: Observations, live: LiveState, summary: Summary | None, rate_window: float, window: float
    ) -> dict[str, Any]:
        p = point(now, obs, live, summary, rate_window, window)
        self.points.append(p)
        return p

    def note(self, ev: Event, at: float) -> dict[str, Any]:
        line = tail_line(ev, at)
        self.tail.append(line)
        if isinstance(ev, Remediation):
            self.remediations.append(
                {"at": at, "alert_id": ev.alert_id, "rule": ev.rule, "action": ev.action, "detail": ev.detail}
            )
        return line

    def note_outcome(self, outcome: Outcome | AttemptFailed, at: float) -> dict[str, Any] | None:
        """Errors, failed attempts and paid answers go to the tail too (with their request ids); plain
        local and cached answers do not (they would drown the events)."""
        if isinstance(outcome, GenerateResult):
            if outcome.responses or outcome.tier not in PAID_TIERS or outcome.cached:
                return None
            text = f"{outcome.tier} {outcome.model} cost=${outcome.cost_usd:.4g} {outcome.timings.total_ms:.0f} ms"
            line: dict[str, Any] = {"at": at, "kind": "result", "text": text}
        elif isinstance(outcome, AttemptFailed):
            text = f"{outcome.tier} {outcome.model} attempt {outcome.attempt}: {outcome.error.code}"
            line = {"at": at, "kind": "attempt.failed", "text": text}
        else:
            line = {"at": at, "kind": "result.error", "text": f"{outcome.error.code}: {outcome.error.message[:160]}"}
        line.update(source="", request_id=outcome.request_id)
        self.tail.append(line)
        return line


def snapshot(
    cfg: OrchestraConfig,
    f: Figures,
    live: LiveState,
    phase: PhaseState | None,
    budgets: LedgerSummary | None,
    alerts: list[Alert],
    obs: Observations,
    board: Board,
    now: float,
) -> dict[str, Any]:
    """Cards, models, phase, money and alerts now (the headline figures are /metrics' own)."""
    cards, models = _hosts(live, now)
    return {
        "now": now,
        "headline": {
            "models_loaded": f.models_loaded,
            "hosts_up": f.hosts_up,
            "spend_today_usd": f.spend_today,
            "spend_velocity_usd_per_hour": f.spend_velocity,
            "cache_hit_ratio": f.window.get("cache_hit_ratio", 0.0),
            "error_ratio": f.window.get("error_ratio", 0.0),
            "request_rate_per_second": f.window.get("request_rate_per_second", 0.0),
            "diversity_score": f.diversity.get("diversity_score"),
            "alerts_open": len(f.alerts),
        },
        "phase": _phase(cfg, phase),
        "cards": cards,
        "models": models,
        "money": _money(f, live, budgets, obs, now, float(cfg.monitor.window)),
        "alerts": [
            {
                "alert_id": a.alert_id,
                "rule": a.rule,
                "severity": a.severity,
                "raised_at": a.raised_at,
                "acked_by": a.acked_by if a.acked_at is not None else None,
                "context": {k: _short(v) for k, v in a.context.items()},
            }
            for a in sorted(alerts, key=lambda a: a.raised_at, reverse=True)
        ],
        "remediations": list(board.remediations)[::-1],
    }


def _hosts(live: LiveState, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The cards of the hosts that are up (each with the models on it) and the model instances."""
    cards: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    for h in sorted(live.hosts_up(now), key=lambda h: h.host):
        on_card: dict[str, list[dict[str, Any]]] = {c.card: [] for c in h.cards}
        for m in h.models:
            shares = (
                m.card_bytes if len(m.card_bytes) == len(m.cards) else [m.bytes // max(1, len(m.cards))] * len(m.cards)
            )
            for card, size in zip(m.cards, shares, strict=True):
                on_card.setdefault(card, []).append({"model": m.model, "instance": m.instance, "bytes": size})
            models.append(
                {
                    "host": h.host,
                    "model": m.model,
                    "instance": m.instance,
                    "keep_alive": m.keep_alive,
                    "in_flight": m.in_flight,
                    "queue_depth": m.queue_depth,
                    "tokens_per_s": round(m.tokens_per_s, 2),
                    "bytes": m.bytes,
                    "draining": m.draining,
                }
            )
        for c in h.cards:
            cards.append(
                {
                    "host": h.host,
                    "card": c.card,
                    "total": c.total_bytes,
                    "used": c.used_bytes,
                    "models": on_card[c.card],
                }
            )
    return cards, models


def _phase(cfg: OrchestraConfig, state: PhaseState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    phase = cfg.phases.get(state.phase)
    frequency = float(phase.rotation_frequency) if phase is not None and phase.rotation_frequency else None
    pools = phase is not None and any(g.rotation_pool for g in phase.groups.values())
    return {
        "phase": state.phase,
        "since": state.since,
        "by": state.by,
        "rotation": state.rotation,
        "rotations": state.rotations,
        "next_rotation_at": state.rotated_at + frequency if frequency and pools and state.rotated_at else None,
    }


def _money(
    f: Figures, live: LiveState, budgets: LedgerSummary | None, obs: Observations, now: float, window: float
) -> dict[str, Any]:
    per_tier = {t: (x.cost_usd, x.answered) for t, x in obs.total(now - window, now).tiers.items() if x.answered}
    return {
        "guard": budgets is not None,
        "budgets": [
            {
                "scope": lim.scope,
                "period": lim.period_key,
                "spent_usd": lim.spent_usd,
                "held_usd": lim.held_usd,
                "hard_usd": lim.hard_usd,
                "soft": lim.soft,
            }
            for lim in (budgets.limits if budgets is not None else [])
        ],
        "spent_by_tier_usd": {t: n / 1e9 for t, n in budgets.by_tier.items()} if budgets is not None else {},
        "cost_per_request_usd": {t: usd / n for t, (usd, n) in sorted(per_tier.items())},
        "disabled": [
            {"tier": t.tier, "reason": t.reason, "until": t.until}
            for t in sorted(live.tiers.values(), key=lambda t: t.tier)
            if not t.enabled
        ],
        "spend_today_usd": f.spend_today,
    }
