"""The rotator's work: converge the hosts on what the phase wants, and scale on queue depth.

    c = Conductor(cfg, executor, world)   # world: what it reads and does, given by the rotator
    await c.converge("scheduled rotation", rotate=True)   # choose -> plan -> carry out -> re-plan on failure
    await c.scale_tick()                                  # one look at the queues (skipped while converging)
    c.overflow_switched("ta", "together", mine=True)      # an overflow switch stored (scaling's own or not)

``converge`` optionally chooses the next rotation picks (``rotation.choose``, stored in ``orch_phase``),
plans the swaps (``planner.plan``), emits ``rotation.planned`` with the steps, and carries them out
(``executor``). When a step fails it plans again from the hosts' fresh state: a model whose load failed
(or timed out, or ran out of memory twice) is excluded, and a rotation pick that is excluded or refused
by the planner is replaced by the next best model of its pool. Both jobs hold one lock: a plan and a
scaling action never interleave their commands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.rotator.executor import Executor, Failure
from policy import phases, planner, rotation, scaling
from schemas.base import Tier
from schemas.commands import Command, SetOverflow
from schemas.config.root import OrchestraConfig
from schemas.events import Event, RotationPlanned, Scale
from schemas.state import HostState, PhaseState, QueueState, TierState

log = logging.getLogger(__name__)
MAX_REPLANS = 4
HISTORY_KEPT = 32


def flat(picks: dict[str, list[str]]) -> list[str]:
    return [m for group in picks.values() for m in group]


@dataclass(frozen=True)
class World:
    """What the conductor reads and does, as callables the rotator gives it."""

    phase: Callable[[], PhaseState]  # the phase record now
    save: Callable[[PhaseState, str], Awaitable[bool]]  # store a record, only while that phase is current
    hosts: Callable[[], Mapping[str, HostState]]
    queues: Callable[[], Mapping[str, QueueState]]
    tiers: Callable[[], Mapping[str, TierState]]
    overflowing: Callable[[], Collection[str]]  # models ('*': all) overflowing now, by anyone's command
    emit: Callable[[Event], Awaitable[None]]
    send: Callable[[Command], Awaitable[Any]]


class Conductor:
    def __init__(self, cfg: OrchestraConfig, executor: Executor, world: World) -> None:
        self.cfg = cfg
        self.executor = executor
        self.w = world
        self.lock = asyncio.Lock()
        self.scale = scaling.ScaleState()
        self.applied: set[str] = set()  # the phase's set as of the last plan (to tell what a change released)
        self.families = {n: m.family for n, m in self.cfg.local_models().items()}

    # --- rotation ----------------------------------------------------------------------------------
    async def converge(self, reason: str, *, rotate: bool) -> None:
        async with self.lock:
            state = self.w.phase()
            base = list(state.history)
            if state.history and state.rotations and state.history[-1] == flat(state.rotation):
                base = base[:-1]  # the current picks' own entry: a re-choice replaces it
            if rotate:
                base = list(state.history)
                state = await self._choose(state, base, set(), keep=None, rotated=True)
            exclude: set[str] = set()
            ooms: Counter[str] = Counter()
            why = reason
            for attempt in range(MAX_REPLANS + 1):
                if self.w.phase().phase != state.phase:
                    log.info("phase %s left while converging (%s): the new phase plans next", state.phase, why)
                    return
                phase = self.cfg.phases[state.phase]
                names = phases.wanted_names(phase, state.rotation)
                wants = [w for w in phases.wants(self.cfg, phase, state.rotation) if w.model not in exclude]
                result = planner.plan(
                    self.cfg, self.w.hosts(), wants, phases.tiers(self.cfg, phase, state.rotation),
                    now=time.time(), protected=set(self.scale.extras), released=self.applied - set(names),
                )  # fmt: skip
                if isinstance(result, planner.Refusal):
                    await self._planned(state, [], f"{why}: refused {result}")
                    if result.model not in flat(state.rotation):
                        log.error("phase %s: %s", state.phase, result)
                        return
                    exclude.add(result.model)
                    state = await self._choose(state, base, exclude, keep=self._keep(state, exclude), rotated=False)
                    why = f"re-plan without {result.model}"
                    continue
                if result.steps or result.deferred or rotate or attempt:
                    await self._planned(state, result.describe(), why)
                failures = await self.executor.run(result.by_host(), reason=f"{reason} ({state.phase})")
                self.applied = set(names)
                if not failures:
                    if result.steps:
                        log.info("phase %s: %d step(s) done (%s)", state.phase, len(result.steps), reason)
                    return
                exclude |= self._failed(failures, ooms)
                if exclude & set(flat(state.rotation)):
                    state = await self._choose(state, base, exclude, keep=self._keep(state, exclude), rotated=False)
                why = "re-plan after " + "; ".join(str(f) for f in failures)
            log.error("phase %s: gave up after %d plans (%s)", state.phase, MAX_REPLANS + 1, why)

    def _failed(self, failures: list[Failure], ooms: Counter[str]) -> set[str]:
        """Models to leave out of the next plan: failed loads, timeouts, a second OOM (a first OOM is
        usually a model that came back on demand meanwhile: the fresh plan makes room again)."""
        out = set()
        for f in failures:
            if f.step.action == "unload" or f.kind in ("send_failed", "host_down"):
                continue
            ooms[f.step.model] += f.kind == "oom"
            if f.kind != "oom" or ooms[f.step.model] >= 2:
                out.add(f.step.model)
        return out

    def _keep(self, state: PhaseState, exclude: set[str]) -> dict[str, list[str]]:
        return {g: p for g, p in state.rotation.items() if not set(p) & exclude}

    async def _choose(
        self, state: PhaseState, base: list[list[str]], exclude: set[str], *, keep: dict[str, list[str]] | None,
        rotated: bool,
    ) -> PhaseState:  # fmt: skip
        if self.w.phase().phase != state.phase:
            return state  # a phase change came in meanwhile: never write the old phase back
        state = self.w.phase()
        phase = self.cfg.phases[state.phase]
        picks = rotation.choose(phase, self.families, base, self.cfg.rotator.recent_window, exclude, keep)
        if not picks and not state.rotation:
            return state
        now = time.time()
        new = msgspec.structs.replace(
            state,
            rotation=picks,
            history=([*base, flat(picks)] if picks else base)[-HISTORY_KEPT:],
            rotations=state.rotations + (1 if rotated else 0),
            rotated_at=now if rotated else state.rotated_at,
        )
        if new != state:
            if not await self.w.save(new, state.phase):
                return state
            log.info("phase %s: rotation picks %s", state.phase, picks)
        return new

    async def _planned(self, state: PhaseState, steps: list[str], reason: str) -> None:
        await self.w.emit(RotationPlanned(phase=state.phase, steps=steps, reason=reason[:1000]))

    # --- scaling -----------------------------------------------------------------------------------
    async def scale_tick(self) -> None:
        if self.lock.locked():
            return  # a plan is running: the next tick looks again
        async with self.lock:
            now = time.time()
            hosts = self.w.hosts()
            state = self.w.phase()
            wanted = set(phases.wanted_names(self.cfg.phases[state.phase], state.rotation))
            for extra in scaling.forget(self.scale, hosts, wanted):
                log.info(
                    "scaling: %s on %s is no longer scaling's (gone, or the phase wants it)", extra.model, extra.host
                )
            depth = scaling.depths(hosts, self.w.queues(), now)
            if any(depth.values()):
                log.debug("scaling: queue depths %s", {m: d for m, d in depth.items() if d})
            scaling.observe(self.scale, depth, now, self.cfg)
            decisions = scaling.decide(
                self.scale, self.cfg, now, depth, hosts, self.w.tiers(), set(self.w.overflowing()), wanted
            )
            for d in decisions:
                if await self._carry_out(d):
                    scaling.record(self.scale, d, time.time())
                    await self.w.emit(Scale(model=d.model, action=d.action, host=d.host, reason=d.reason))
                    log.warning("scaling: %s %s%s: %s", d.action, d.model, f" on {d.host}" if d.host else "", d.reason)
                else:
                    self.scale.over_since[d.for_model] = time.time()  # try again after another sustained backlog

    def overflow_switched(self, key: str, tier: Tier | None, *, mine: bool) -> None:
        """An overflow switch was stored: scaling later switches off only what it switched on itself."""
        if tier is None:
            self.scale.overflowing.pop(key, None)
        elif mine:
            self.scale.overflowing[key] = tier

    async def _carry_out(self, d: scaling.Decision) -> bool:
        match d.action:
            case "up" | "down":
                assert d.host is not None
                where = d.placement
                step = planner.Step(
                    d.host,
                    "load" if d.action == "up" else "unload",
                    d.model,
                    "warm" if d.action == "up" else None,
                    sum(where.per_card) if where else 0,
                    where.cards if where else (),
                    f"scale {d.action}",
                    where.per_card if where else (),
                )
                failure = await self.executor.step(step, d.reason)
                if failure is not None:
                    log.warning("scaling: %s", failure)
                return failure is None
            case "overflow_on" | "overflow_off":
                cmd = SetOverflow(
                    model=d.model, enabled=d.action == "overflow_on", tier=d.tier or "together", reason=d.reason
                )
                await self.w.send(cmd)
                return True
        return False  # pragma: no cover
