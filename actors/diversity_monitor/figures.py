"""The figures the monitor shows (Prometheus gauges, digests), assembled from plain state. Pure."""

from __future__ import annotations

from actors.diversity_monitor.diversity import Summary
from actors.diversity_monitor.metrics import MAX_TASKS, Figures
from actors.diversity_monitor.rules import Alert
from actors.diversity_monitor.window import LiveState, Observations
from schemas.config.models import CloudModel
from schemas.config.root import OrchestraConfig
from schemas.state import ProviderState


def figures(
    cfg: OrchestraConfig,
    obs: Observations,
    live: LiveState,
    providers: dict[str, ProviderState],
    summary: Summary | None,
    alerts: list[Alert],
    now: float,
) -> Figures:
    window = float(cfg.monitor.window)
    up = live.hosts_up(now)
    loaded = {m.model for h in up for m in h.models}
    f = Figures(models_loaded=sum(len(h.models) for h in up), hosts_up=len(up))
    for name, model in cfg.models.items():
        if isinstance(model, CloudModel):
            provider = cfg.providers.get(model.provider)
            tier = provider.tier if provider else "premium"
            state = providers.get(model.provider)
            switch = live.tiers.get(tier)
            ok = (
                state is not None
                and state.available
                and state.cooldown_until <= now
                and (switch is None or switch.enabled)
            )
            f.models[(name, tier)] = ok
        else:
            f.models[(name, "local")] = name in loaded
    for h in up:
        for c in h.cards:
            f.cards[(h.host, c.card)] = (c.used_bytes, c.total_bytes)
    for q in live.current_queues(now):
        f.queues[q.target] = (q.depth, q.oldest_wait_s)
    for tier in ("local", "together", "premium"):
        switch = live.tiers.get(tier)
        f.tiers[tier] = switch is None or switch.enabled
    for key, metric in (
        ("cache_hit_ratio", "cache_hit_rate"),
        ("error_ratio", "error_rate"),
        ("request_rate_per_second", "request_rate"),
    ):
        value = obs.measure(metric, window, now, live).value
        f.window[key] = value if value is not None else 0.0
    f.spend_today = obs.daily_spend(now)
    f.spend_velocity = obs.measure("spend_velocity", window, now, live).value or 0.0
    if summary is not None:
        f.diversity = {k: v for k, v in summary.overall.items() if k != "families"}
        recent = [t for t, m in summary.tasks.items() if m.answers >= 2][:MAX_TASKS]
        f.tasks = {t: summary.tasks[t].diversity_score for t in recent}
    f.families.update(obs.total(now - window, now).families)
    f.alerts = [(a.rule, a.severity) for a in alerts]
    return f


def digest_figures(f: Figures) -> dict[str, float]:
    """The headline numbers of a digest."""
    out = {
        "models_loaded": float(f.models_loaded),
        "hosts_up": float(f.hosts_up),
        "spend_today_usd": round(f.spend_today, 4),
        "open_alerts": float(len(f.alerts)),
        **{k: round(v, 4) for k, v in f.window.items()},
    }
    for key in (
        "diversity_score",
        "unique_approaches",
        "model_families",
        "top_model_share",
        "embedding_diversity",
        "ast_diversity",
        "temperature_variance",
    ):
        if key in f.diversity:
            out[f"diversity.{key}"] = round(f.diversity[key], 4)
    return out
