"""The swap planner, pure: per host, the unloads then loads that bring the hosts from what they hold now
to what the phase wants, with every card within its memory after every step — or a refusal that names
the card and the sizes.

    plan(cfg, hosts, wants, tiers, now=..., protected=()) -> Plan | Refusal

Inputs are plain data: the config (cards, hosts, the model library), the hosts' live ``HostState`` (what
is loaded where, bytes per card), the wanted models in order (``phases.wants``) and every model's tier in
the phase. Footprints, variants and placement come from the gpu_host's own memory model
(``policy.memory.plan``: weights + KV cache for context x batch + overhead per card; the paper's
4-bit rule; splits over a card group), so the planner predicts what the host will do.

What it decides:

- a wanted model already loaded on an up host stays there (its keep-alive is corrected if needed);
- a loaded model the phase does not want and the host holds ``hot`` is unloaded when the phase has just
  released it (rotated out, or left with the previous phase: ``released``) and its tier is now ``cold`` —
  the paper's swap; otherwise it is demoted to its tier (``warm``: it stays while used; ``cold``: the host
  unloads it when idle). Models held warm or cold are left to the host's keep-alive. Such lingering models
  (and the scaler's extras, ``protected``) are unloaded only when a wanted model needs their room, least
  recently used first;
- wanted models are placed least flexible first (pinned ones, then the largest smallest-variant), each on
  the host that holds it without unloading anything if one can, then with the most precise variant, the
  largest batch and the tightest fit. Variants are those with a file: the library's and the ones
  ``orchestra model quantize`` registered; a card's use is what its host reports (the larger of its
  bookkeeping and NVML's reading on CUDA cards), so memory taken outside the orchestra shrinks the choice;
- a wanted model whose hosts are all down is deferred (loaded when one comes up); one that fits nowhere
  is refused, with the reason per host ("needs 51.8 GB ..., 48 GB free of 48 GB on P40_0+P40_1").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from policy import memory
from policy.memory import loadable_variants, planned_kv_bytes_per_token
from policy.phases import Want
from schemas.base import KeepAlive
from schemas.config.models import LocalModel
from schemas.config.root import OrchestraConfig
from schemas.state import HostState

HOST_STALE_AFTER = 3.0  # missed heartbeats before a host counts as down (as the router counts)
Action = Literal["keep_alive", "unload", "load"]
_ORDER: dict[str, int] = {"keep_alive": 0, "unload": 1, "load": 2}


@dataclass(frozen=True)
class Step:
    host: str
    action: Action
    model: str
    keep_alive: KeepAlive | None = None
    bytes: int = 0
    cards: tuple[str, ...] = ()
    why: str = ""
    per_card: tuple[int, ...] = ()  # a load: the bytes each of ``cards`` will hold
    variant: str = ""  # a load: the quantisation the host will pick (the most precise that fits)

    def __str__(self) -> str:
        if self.action == "load":
            where = "+".join(self.cards)
            quant = f"{self.variant}, " if self.variant else ""
            return f"{self.host}: load {self.model} {self.keep_alive} ({quant}{_gb(self.bytes)} on {where})"
        if self.action == "unload":
            return f"{self.host}: unload {self.model} ({self.why})"
        return f"{self.host}: keep {self.model} {self.keep_alive} ({self.why})"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    placed: dict[str, str]  # wanted model -> the host that holds it once the plan is done
    deferred: tuple[str, ...] = ()  # wanted models whose hosts are all down

    def by_host(self) -> dict[str, list[Step]]:
        out: dict[str, list[Step]] = {}
        for step in self.steps:
            out.setdefault(step.host, []).append(step)
        return out

    def describe(self) -> list[str]:
        return [str(s) for s in self.steps] + [f"deferred {m}: its hosts are down" for m in self.deferred]


@dataclass(frozen=True)
class Refusal:
    model: str
    reason: str
    card: str = ""
    requested: int = 0
    free: int = 0
    total: int = 0

    def __str__(self) -> str:
        return f"{self.model}: {self.reason}"


@dataclass
class _Resident:
    model: str
    per_card: dict[str, int]
    keep_alive: str
    busy: bool
    last_used: float


@dataclass
class _Host:
    name: str
    totals: dict[str, int]
    used: dict[str, int]
    overhead: int
    residents: dict[str, _Resident] = field(default_factory=dict)
    lingering: set[str] = field(default_factory=set)
    steps: list[Step] = field(default_factory=list)

    def cards(self, names: Sequence[str], gone: Collection[str] = ()) -> list[memory.Card]:
        freed: dict[str, int] = {}
        for model in gone:
            for card, n in self.residents[model].per_card.items():
                freed[card] = freed.get(card, 0) + n
        return [memory.Card(c, self.totals[c], max(0, self.used[c] - freed.get(c, 0))) for c in names]

    def remove(self, model: str) -> None:
        r = self.residents.pop(model)
        for card, n in r.per_card.items():
            self.used[card] = max(0, self.used[card] - n)
        self.lingering.discard(model)


def host_is_up(cfg: OrchestraConfig, state: HostState | None, now: float) -> bool:
    if state is None or not state.up or state.host not in cfg.hosts:
        return False
    beat = float(cfg.hosts[state.host].heartbeat)
    return now - state.heartbeat_at <= max(HOST_STALE_AFTER * beat, 5.0)


def may_hold(cfg: OrchestraConfig, host: str, model: LocalModel) -> bool:
    """Pinned models only on the host that owns their cards."""
    return not model.cards or set(model.cards) <= set(cfg.hosts[host].cards)


def _sim(cfg: OrchestraConfig, state: HostState) -> _Host:
    hcfg = cfg.hosts[state.host]
    totals = {c: int(cfg.cards[c].memory) for c in hcfg.cards}
    live = {c.card: c.used_bytes for c in state.cards}
    host = _Host(state.host, totals, {c: live.get(c, 0) for c in totals}, int(hcfg.overhead))
    for m in state.models:
        if len(m.card_bytes) == len(m.cards) and m.cards:
            per_card = dict(zip(m.cards, m.card_bytes, strict=True))
        else:  # a host that does not say: an even split
            cards = [c for c in m.cards if c in totals] or list(totals)[:1]
            per_card = {c: m.bytes // len(cards) for c in cards}
        r = _Resident(m.model, per_card, m.keep_alive, m.in_flight + m.queue_depth > 0, m.last_used)
        if m.draining:  # being unloaded already: its memory is free by the time a load gets the host's lock
            for card, n in r.per_card.items():
                host.used[card] = max(0, host.used[card] - n)
            continue
        host.residents[m.model] = r
    return host


def phase_models(cfg: OrchestraConfig) -> set[str]:
    """Local models some phase loads (always-loaded or in a rotation pool)."""
    names = {m for p in cfg.phases.values() for g in p.groups.values() for m in [*g.always_loaded, *g.rotation_pool]}
    return {m for m in names if m in cfg.local_models()}


def _victims(host: _Host, check: Callable[[frozenset[str]], bool]) -> list[str] | None:
    """The fewest lingering models, idle and least recently used first, whose unloading lets ``check`` hold."""
    if check(frozenset()):
        return []
    order = sorted(
        (host.residents[m] for m in host.lingering),
        key=lambda r: (r.busy, r.keep_alive != "cold", r.last_used, -sum(r.per_card.values()), r.model),
    )
    chosen: list[str] = []
    for r in order:
        chosen.append(r.model)
        if check(frozenset(chosen)):
            for name in reversed(chosen[:-1]):  # drop the ones that turn out unneeded
                trial = frozenset(n for n in chosen if n != name)
                if check(trial):
                    chosen.remove(name)
            return chosen
    return None


def plan(
    cfg: OrchestraConfig,
    hosts: Mapping[str, HostState],
    wants: Sequence[Want],
    tiers: Mapping[str, KeepAlive],
    *,
    now: float,
    protected: Collection[tuple[str, str]] = (),
    released: Collection[str] = (),
) -> Plan | Refusal:
    local = cfg.local_models()
    sims = {name: _sim(cfg, st) for name, st in hosts.items() if host_is_up(cfg, st, now)}
    wanted = {w.model: w for w in wants}
    placed = _settle_residents(sims.values(), wanted, tiers, protected, released)
    # then the wanted models not loaded anywhere, least flexible first
    todo = [w for w in wants if w.model not in placed]
    for w in todo:
        if w.model not in local:
            return Refusal(w.model, "not a local model of the library")
    todo.sort(key=lambda w: (not local[w.model].cards, -_smallest(local[w.model])))
    deferred: list[str] = []
    pinned_cards = {c for name in phase_models(cfg) for c in local[name].cards}
    for w in todo:
        model = local[w.model]
        if model.source is None:
            return Refusal(w.model, "has no file in the library (described for planning only)")
        allowed = [h for h in cfg.hosts if may_hold(cfg, h, model)]
        if not allowed:
            return Refusal(w.model, f"no host owns its cards {model.cards}")
        candidates = [sims[h] for h in allowed if h in sims]
        if not candidates:
            deferred.append(w.model)
            continue
        chosen = _place(w, model, candidates, pinned_cards)
        if isinstance(chosen, Refusal):
            return chosen
        placed[w.model] = chosen
    steps: list[Step] = []
    for host in sims.values():
        steps += sorted(host.steps, key=lambda s: _ORDER[s.action])
    return Plan(tuple(steps), placed, tuple(deferred))


def _settle_residents(
    sims: Iterable[_Host],
    wanted: Mapping[str, Want],
    tiers: Mapping[str, KeepAlive],
    protected: Collection[tuple[str, str]],
    released: Collection[str],
) -> dict[str, str]:
    """What is loaded now: wanted models stay (keep-alive corrected); the others unloaded, demoted or left.
    The wanted models already loaded -> their host."""
    placed: dict[str, str] = {}
    for host in sims:
        for r in list(host.residents.values()):
            want = wanted.get(r.model)
            if (host.name, r.model) in protected:  # the scaler's (an extra instance of a wanted model too)
                host.lingering.add(r.model)
            elif want is not None:
                placed.setdefault(r.model, host.name)
                if r.keep_alive != want.keep_alive:
                    host.steps.append(Step(host.name, "keep_alive", r.model, want.keep_alive, why="the phase wants it"))
                    r.keep_alive = want.keep_alive
            elif r.keep_alive != "hot":
                host.lingering.add(r.model)  # the host's keep-alive decides
            elif tiers.get(r.model, "warm") == "cold" and r.model in released:
                host.steps.append(Step(host.name, "unload", r.model, why="out of the phase"))
                host.remove(r.model)
            else:
                tier = tiers.get(r.model, "warm")
                tier = "warm" if tier == "hot" else tier
                host.steps.append(Step(host.name, "keep_alive", r.model, tier, why=f"out of the phase: {tier}"))
                r.keep_alive = tier
                host.lingering.add(r.model)
    return placed


_Option = tuple[tuple[object, ...], _Host, memory.Plan, list[str]]  # (score: lower is better, host, plan, victims)


def _place(w: Want, model: LocalModel, candidates: list[_Host], pinned_elsewhere: set[str]) -> str | Refusal:
    """Choose the host for one wanted model and record its steps there; or refuse with every host's reason.
    ``pinned_elsewhere``: cards other models are pinned to (an unpinned model avoids them when it can, so a
    later phase finds them free)."""
    variants = loadable_variants(model)
    options: list[_Option] = []
    misses: list[tuple[str, memory.NoFit]] = []
    for host in candidates:
        option = _option(host, model, variants, pinned_elsewhere)
        if isinstance(option, memory.NoFit):
            misses.append((host.name, option))
        elif option is not None:
            options.append(option)
    if not options:
        worst = max((m for _, m in misses), key=lambda m: m.free) if misses else None
        reasons = "; ".join(f"{host}: {m.reason}" for host, m in misses)
        return Refusal(
            w.model,
            f"does not fit on any host that may hold it: {reasons}",
            card=worst.card if worst else "",
            requested=worst.requested if worst else 0,
            free=worst.free if worst else 0,
            total=worst.total if worst else 0,
        )
    _, host, best, victims = min(options, key=lambda o: o[0])
    _load(host, w, model, best, victims)
    return host.name


def _option(
    host: _Host, model: LocalModel, variants: list[memory.Variant], pinned_elsewhere: set[str]
) -> _Option | memory.NoFit | None:
    """How the model would sit on this host (the lingering models it would unload, scored), or why it cannot."""
    pinned = bool(model.cards)
    names = list(model.cards) if pinned else list(host.totals)
    movable = sorted(host.lingering)
    best = memory.plan(
        variants,
        host.cards(names, movable),
        kv_bytes_per_token=planned_kv_bytes_per_token(model),
        context=model.context_length,
        max_batch=1 if model.engine == "ctransformers" else model.max_batch_size,
        overhead=host.overhead,
        pinned=pinned,
    )
    if isinstance(best, memory.NoFit):
        return best

    def fits(gone: frozenset[str], need: memory.Footprint = best.footprint) -> bool:
        return memory.place(need, host.cards(names, gone), pinned=pinned) is not None

    victims = _victims(host, fits)
    if victims is None:  # pragma: no cover - the plan above was made with every lingering model gone
        return None
    free_after = sum(c.free for c in host.cards(names, victims)) - best.bytes
    claimed = len(set(best.placement.cards) & pinned_elsewhere) if not pinned else 0
    return (bool(victims), claimed, -best.variant.bits, -best.batch, free_after, host.name), host, best, victims


def _load(host: _Host, w: Want, model: LocalModel, best: memory.Plan, victims: list[str]) -> None:
    """Record the chosen host's steps: unload the victims, then load the model where the plan put it."""
    pinned = bool(model.cards)
    for v in victims:
        host.steps = [s for s in host.steps if s.model != v]  # a demote made moot by the unload
        host.steps.append(Step(host.name, "unload", v, why=f"room for {w.model}"))
        host.remove(v)
    names = list(model.cards) if pinned else list(host.totals)
    placement = memory.place(best.footprint, host.cards(names), pinned=pinned)
    assert placement is not None
    per_card = dict(zip(placement.cards, placement.per_card, strict=True))
    for card, n in per_card.items():
        host.used[card] += n
    host.residents[w.model] = _Resident(w.model, per_card, w.keep_alive, False, 0.0)
    why = f"{w.group} rotation" if w.rotation else (f"{w.group} always loaded" if w.group else "wanted")
    host.steps.append(
        Step(host.name, "load", w.model, w.keep_alive, sum(per_card.values()), tuple(placement.cards), why,
             tuple(placement.per_card), best.variant.quant)
    )  # fmt: skip


def _smallest(model: LocalModel) -> int:
    sizes = [v.weights for v in memory.allowed_variants(loadable_variants(model))]
    return min(sizes) if sizes else 0


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"
