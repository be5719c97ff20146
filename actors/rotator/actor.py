"""The rotator: training phases, scheduled model rotation, warm tiers and queue-depth scaling
(``python -m actors.rotator``; run one).

It owns the current phase (KV ``orch_phase``, key ``current``; on first start ``rotator.initial_phase``)
and changes it on ``SetPhase`` commands (``orch.cmd.phase``), each change a ``phase.changed`` event. At
each phase's ``rotation_frequency`` (apscheduler), on a phase change and on ``Rotate`` (``orch.cmd.rotate``)
it chooses the next rotation picks and converges the gpu_hosts on the phase's set with load / unload
commands (``conductor``); it converges again when a host (re)starts or holds ``hot`` a model the phase does
not want (a host's preload, a load on demand). A few times per ``scale.sustained`` it looks at the queue
depths (``orch_queues``, the hosts' state) and scales. The hosts own what they load: the rotator only
asks, and follows their events and state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from datetime import datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from nats.js.api import DeliverPolicy

from actors.rotator.conductor import Conductor
from actors.rotator.executor import Executor
from bus import subjects
from bus.actor import Actor
from bus.consumer import ConsumerSpec, Delivery
from bus.errors import Permanent
from bus.kv import LiveView, TypedKV
from policy import phases
from schemas.base import Tier
from schemas.codec import COMMAND, EVENT, Codec
from schemas.commands import Rotate, SetOverflow, SetPhase
from schemas.config.root import OrchestraConfig
from schemas.errors import SchemaError
from schemas.events import PhaseChanged
from schemas.state import HostState, PhaseState, QueueState, TierState

PHASE_KEY = "current"
FOLLOWED = (subjects.EVENT_MODEL, subjects.EVENT_OOM)
RETRY_S = 5.0
DUE_SLACK_S = 0.5  # a scheduled rotation that fires a hair early still counts


class Rotator(Actor):
    """Training phases, scheduled rotation, warm tiers and queue-depth scaling."""

    name = "rotator"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self.state = phases.initial_state(cfg, time.time())
        self.conductor = Conductor(self)
        self.overflow: dict[str, Tier] = {}  # models ('*' = all) overflowing now, by anyone's command
        self.scheduler = AsyncIOScheduler()
        self.requests: asyncio.Queue[tuple[str, bool | None]] = asyncio.Queue()
        self.host_starts: dict[str, float] = {}
        self.drift_seen: set[tuple[str, str, float]] = set()  # (host, model, loaded_at) already looked at
        self.saving = asyncio.Lock()
        self._subs: list[Any] = []
        scale = cfg.rotator.scale
        self.scale_every = min(max(float(scale.sustained) / 4, 0.25), 5.0)

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream="COMMANDS", durable=self.name, subjects=subjects.ROTATOR_COMMANDS, handler=self.handle,
                concurrency=1, deliver_new=True, description="phase changes and rotate-now, in order",
                **self.consumer_defaults(),
            )
        ]  # fmt: skip

    async def on_start(self) -> None:
        self.hosts: LiveView[HostState] = LiveView(self.js, subjects.KV_HOSTS, Codec(HostState), self.on_host)
        self.queues: LiveView[QueueState] = LiveView(self.js, subjects.KV_QUEUES, Codec(QueueState))
        self.tiers: LiveView[TierState] = LiveView(self.js, subjects.KV_TIERS, Codec(TierState))
        views: list[LiveView[Any]] = [self.hosts, self.queues, self.tiers]
        for view in views:
            self.spawn(f"view:{view.bucket}", view.run)
        await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in views)), 10.0)
        self.host_starts = {name: s.started_at for name, s in self.hosts.data.items()}
        self.executor = Executor(self.send, self.hosts.get, float(self.cfg.rotator.step_timeout), by=self.name)
        for subject in FOLLOWED:
            self._subs.append(await self.nc.subscribe(subject, cb=self.on_event))
        self.spawn("overflow", self.follow_overflow)
        self.kv: TypedKV[PhaseState] = await TypedKV.open(self.js, subjects.KV_PHASE, Codec(PhaseState))
        stored = await self.kv.get(PHASE_KEY)
        if stored is not None and stored.phase in self.cfg.phases:
            self.state = stored
        else:
            if stored is not None:
                self.log.warning("stored phase %r is not in the config: starting %s", stored.phase, self.state.phase)
            await self.save(self.state)
            await self.emit(PhaseChanged(previous=stored.phase if stored else None, phase=self.state.phase,
                                         by=self.state.by))  # fmt: skip
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every job at INFO
        self.scheduler.start()
        self.scheduler.add_job(self.conductor.scale_tick, IntervalTrigger(seconds=self.scale_every), id="scale",
                               max_instances=1, coalesce=True)  # fmt: skip
        self.trigger(f"start in {self.state.phase}", rotate=None)
        self.spawn("conduct", self.conduct)
        self.log.info("phase %s (since %s, by %s)", self.state.phase, _when(self.state.since), self.state.by)

    async def on_stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # --- commands --------------------------------------------------------------------------------
    async def handle(self, d: Delivery) -> None:
        cmd = COMMAND.decode(d.data)
        match cmd:
            case SetPhase():
                try:
                    new = phases.change_phase(self.state, cmd, self.cfg, time.time())
                except ValueError as exc:
                    raise Permanent(str(exc)) from exc
                if new is None:
                    self.log.info("phase %s set again by %s: nothing to do", cmd.phase, cmd.by or "?")
                    return
                previous = self.state.phase
                await self.save(new)
                await self.emit(PhaseChanged(previous=previous, phase=new.phase, by=cmd.by))
                self.log.warning("phase %s -> %s (by %s%s)", previous, new.phase, cmd.by or "?",
                                 f": {cmd.reason}" if cmd.reason else "")  # fmt: skip
                self.trigger(f"phase {new.phase} set by {cmd.by or '?'}", rotate=True)
            case Rotate():
                if cmd.phase and cmd.phase != self.state.phase:
                    self.log.warning("rotate %s by %s ignored: the phase is %s", cmd.phase, cmd.by, self.state.phase)
                    return
                self.trigger(f"rotate now (by {cmd.by or '?'})", rotate=True)
            case _:
                raise Permanent(f"not a rotator command: {type(cmd).__name__}")

    # --- converging ------------------------------------------------------------------------------
    def trigger(self, reason: str, *, rotate: bool | None) -> None:
        """Ask for a converge; ``rotate``: choose new picks first (None: only if the rotation is due then)."""
        self.requests.put_nowait((reason, rotate))

    async def conduct(self) -> None:
        """One converge at a time; triggers that arrive meanwhile are merged into the next one."""
        while True:
            merged = [await self.requests.get()]
            while not self.requests.empty():
                merged.append(self.requests.get_nowait())
            reason = "; ".join(dict.fromkeys(r for r, _ in merged))
            phase = self.cfg.phases[self.state.phase]
            due = phases.rotation_due(self.state, phase, time.time() + DUE_SLACK_S)
            rotate = any(r is True for _, r in merged) or (due and any(r is None for _, r in merged))
            try:
                await self.conductor.converge(reason, rotate=rotate)
            except Exception:  # NATS restarting under us: try the same again shortly
                self.log.exception("converging (%s) failed; again in %gs", reason, RETRY_S)
                asyncio.get_running_loop().call_later(RETRY_S, functools.partial(self.trigger, reason, rotate=rotate))
            self.arm_rotation()

    def arm_rotation(self) -> None:
        """The next scheduled rotation: one frequency after the current picks were chosen."""
        phase = self.cfg.phases[self.state.phase]
        frequency = phase.rotation_frequency
        if frequency is None or not any(g.rotation_pool for g in phase.groups.values()):
            if self.scheduler.get_job("rotation"):
                self.scheduler.remove_job("rotation")
            return
        at = max(self.state.rotated_at + float(frequency), time.time())
        self.scheduler.add_job(self.scheduled, DateTrigger(run_date=datetime.fromtimestamp(at).astimezone()),
                               id="rotation", replace_existing=True, misfire_grace_time=None)  # fmt: skip

    async def scheduled(self) -> None:  # a coroutine: apscheduler runs plain functions in a thread
        self.trigger("scheduled rotation", rotate=None)  # a rotation since it was armed makes it moot

    async def save(self, state: PhaseState, *, only_in: str | None = None) -> bool:
        """Write the phase record (one write at a time); ``only_in``: only while that phase is current."""
        async with self.saving:
            if only_in is not None and self.state.phase != only_in:
                return False
            await self.kv.put(PHASE_KEY, state)
            self.state = state
            return True

    # --- what the hosts do -----------------------------------------------------------------------
    async def on_event(self, msg: Any) -> None:
        try:
            event = EVENT.decode(msg.data)
        except SchemaError:
            return
        self.executor.on_event(event)

    def on_host(self, name: str, state: HostState | None) -> None:
        if hasattr(self, "executor"):
            self.executor.on_host(name, state)
        if state is None or not state.up:
            return
        if self.host_starts.get(name) != state.started_at:
            self.host_starts[name] = state.started_at
            self.trigger(f"host {name} started", rotate=False)
        wanted = phases.wanted_names(self.cfg.phases[self.state.phase], self.state.rotation)
        for m in state.models:  # pinned by someone else (a preload, a load on demand): the phase says how to keep it
            key = (name, m.model, m.loaded_at)
            if m.keep_alive == "hot" and m.model not in wanted and not m.draining and key not in self.drift_seen:
                self.drift_seen.add(key)
                self.trigger(f"{name} holds {m.model} hot", rotate=False)

    async def follow_overflow(self) -> None:
        """Fold every router overflow command (the router does the same): which models overflow now, and
        which of those this rotator switched on (scaling switches off only its own)."""
        sub = await self.js.subscribe(f"{subjects.PREFIX}.cmd.router.>", stream="COMMANDS",
                                      ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)  # fmt: skip
        try:
            async for msg in sub.messages:
                with contextlib.suppress(SchemaError):
                    cmd = COMMAND.decode(msg.data)
                    if isinstance(cmd, SetOverflow):
                        key = cmd.model or "*"
                        mine = self.conductor.scale.overflowing
                        if cmd.enabled:
                            self.overflow[key] = cmd.tier
                            if cmd.by == self.name:
                                mine[key] = cmd.tier
                        else:
                            self.overflow.pop(key, None)
                            mine.pop(key, None)
        finally:
            await sub.unsubscribe()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
