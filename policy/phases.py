"""Training phases and warm tiers, pure: what a phase wants loaded, and how each model is kept.

    wants(phase, rotation)              -> [Want]   always-loaded models, then the rotation picks, in order
    tier_of(model, cfg, phase, wanted)  -> "hot" | "warm" | "cold"
    change_phase(state, cmd, cfg, now)  -> PhaseState (the new phase) | None (already there); ValueError
                                           for an unknown phase

Warm tiers (Mirador's tiered warming, per model and per phase):

    hot   always loaded while the phase runs: its always-loaded models and its current rotation picks.
          The rotator loads them with ``keep_alive: hot``, so the gpu_host never evicts or expires them.
    warm  loaded while in use: a model outside the phase's set stays after its last use for the library's
          ``keep_alive_ttl``, then the gpu_host unloads it (it comes back on demand).
    cold  loaded on demand only, unloaded as soon as it is idle.

A model's tier in a phase: ``hot`` while it is a rotation pick; else the phase's ``keep_alive`` override
when it names the model; else ``hot`` for the phase's always-loaded models; else the library's
``keep_alive`` with ``hot`` read as ``warm`` (a library-hot model outside the phase is not pinned). So an
override says how a pool model is kept while it is out of the rotation, and how an always-loaded model is
kept (``warm``: loaded with the phase but free to leave when idle; ``cold``: only on demand); an override
``hot`` adds a model to the phase's set.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.base import KeepAlive
from schemas.commands import SetPhase
from schemas.config.models import LocalModel
from schemas.config.ops import PhaseCfg
from schemas.config.root import OrchestraConfig
from schemas.state import PhaseState


@dataclass(frozen=True)
class Want:
    """A model the phase wants loaded, how it is kept, and why."""

    model: str
    keep_alive: KeepAlive = "hot"
    group: str = ""
    rotation: bool = False  # a rotation pick (another pool model may replace it when it cannot be loaded)


def wanted_names(phase: PhaseCfg, rotation: dict[str, list[str]]) -> list[str]:
    """The phase's set: always-loaded models of every group, the rotation picks, hot overrides; no repeats."""
    names: list[str] = []
    for group in phase.groups.values():
        names += group.always_loaded
    for gname in phase.groups:
        names += rotation.get(gname, [])
    names += [m for m, tier in phase.keep_alive.items() if tier == "hot"]
    return list(dict.fromkeys(names))


def tier_of(model: str, cfg: OrchestraConfig, phase: PhaseCfg, rotation: dict[str, list[str]]) -> KeepAlive:
    if any(model in picks for picks in rotation.values()):
        return "hot"
    override = phase.keep_alive.get(model)
    if override is not None:
        return override
    if any(model in g.always_loaded for g in phase.groups.values()):
        return "hot"
    lib = cfg.models.get(model)
    keep: KeepAlive = lib.keep_alive if isinstance(lib, LocalModel) else "cold"
    return "warm" if keep == "hot" else keep


def wants(cfg: OrchestraConfig, phase: PhaseCfg, rotation: dict[str, list[str]]) -> list[Want]:
    """What the phase wants loaded now (cold overrides excluded: those load on demand), in order."""
    names = wanted_names(phase, rotation)
    group_of: dict[str, tuple[str, bool]] = {}
    for gname, group in phase.groups.items():
        for m in group.always_loaded:
            group_of.setdefault(m, (gname, False))
    for gname, picks in rotation.items():
        for m in picks:
            group_of.setdefault(m, (gname, True))
    out = []
    for name in names:
        tier = tier_of(name, cfg, phase, rotation)
        if tier == "cold":
            continue
        gname, rotating = group_of.get(name, ("", False))
        out.append(Want(name, tier, gname, rotating))
    return out


def tiers(cfg: OrchestraConfig, phase: PhaseCfg, rotation: dict[str, list[str]]) -> dict[str, KeepAlive]:
    """Every local model's tier in the phase."""
    return {name: tier_of(name, cfg, phase, rotation) for name in cfg.local_models()}


def change_phase(state: PhaseState | None, cmd: SetPhase, cfg: OrchestraConfig, now: float) -> PhaseState | None:
    """The state after ``SetPhase``: None when the phase is already current; ValueError for an unknown one.
    The rotation history is kept across phases (a model just rotated out is still recent)."""
    if cmd.phase not in cfg.phases:
        raise ValueError(f"unknown phase {cmd.phase!r} (phases: {', '.join(cfg.phases)})")
    if state is not None and state.phase == cmd.phase:
        return None
    history = list(state.history) if state is not None else []
    return PhaseState(phase=cmd.phase, since=now, by=cmd.by, rotation={}, history=history, rotations=0, rotated_at=0.0)


def initial_state(cfg: OrchestraConfig, now: float) -> PhaseState:
    return PhaseState(phase=cfg.rotator.initial_phase, since=now, by="rotator:initial_phase")


def rotation_due(state: PhaseState, phase: PhaseCfg, now: float) -> bool:
    """Whether the phase rotates and its picks are missing or older than its rotation frequency."""
    pools = any(g.rotation_pool and g.rotation_size for g in phase.groups.values())
    if not pools or phase.rotation_frequency is None:
        return False
    if any(g.rotation_pool and g.rotation_size and gname not in state.rotation for gname, g in phase.groups.items()):
        return True
    return now - state.rotated_at >= float(phase.rotation_frequency)
