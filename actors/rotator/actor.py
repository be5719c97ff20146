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

It is also the one writer of the overflow switches (KV ``orch_overflow``, key: the model or ``*``): it
handles every ``SetOverflow`` (``orch.cmd.router.overflow``: its scaling's, the monitor's remediation's)
with a durable consumer of its own; the router and the monitor watch the bucket.

Everything arrives as a message of ``messages.py`` and goes through ``handle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from datetime import datetime
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from actors.rotator import overflow
from actors.rotator.conductor import Conductor, World
from actors.rotator.executor import Executor
from actors.rotator.messages import (
    HostChanged,
    ModelEvent,
    OverflowCommand,
    PhaseCommand,
    RotationDue,
    RotatorMsg,
    ScaleTick,
)
from bus import subjects
from bus.actor import Actor
from bus.consumer import ConsumerSpec
from bus.errors import Permanent
from bus.kv import LiveView, TypedKV
from bus.overflow import key_of
from policy import phases
from schemas.codec import COMMAND, EVENT, Codec
from schemas.commands import AnyCommand, Rotate, SetOverflow, SetPhase
from schemas.config.root import OrchestraConfig
from schemas.errors import SchemaError
from schemas.events import PhaseChanged
from schemas.state import HostState, OverflowState, PhaseState, QueueState, TierState

PHASE_KEY = "current"
FOLLOWED = (subjects.EVENT_MODEL, subjects.EVENT_OOM)
RETRY_S = 5.0
DUE_SLACK_S = 0.5  # a scheduled rotation that fires a hair early still counts
T = TypeVar("T")


class Rotator(Actor):
    """Training phases, scheduled rotation, warm tiers and queue-depth scaling."""

    name = "rotator"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self.state = phases.initial_state(cfg, time.time())
        self.hosts: LiveView[HostState] | None = None  # the KV watches: opened at start
        self.queues: LiveView[QueueState] | None = None
        self.tiers: LiveView[TierState] | None = None
        self.kv: TypedKV[PhaseState] | None = None
        self.switches: TypedKV[OverflowState] | None = None  # orch_overflow: this rotator writes it
        self.overflow: dict[str, OverflowState] = {}  # models ('*' = all) overflowing now, as stored
        self.executor = Executor(self.send, self.host, float(cfg.rotator.step_timeout), by=self.name)
        self.conductor = Conductor(cfg, self.executor, World(
            phase=lambda: self.state, save=self.save_in, hosts=lambda: _data(self.hosts),
            queues=lambda: _data(self.queues), tiers=lambda: _data(self.tiers), overflowing=lambda: self.overflow,
            emit=self.emit, send=self.send,
        ))  # fmt: skip
        self.scheduler = AsyncIOScheduler()
        self.requests: asyncio.Queue[tuple[str, bool | None]] = asyncio.Queue()
        self.inbox: asyncio.Queue[RotatorMsg] = asyncio.Queue()  # what a KV watch's callback saw, in order
        self.host_starts: dict[str, float] = {}
        self.drift_seen: set[tuple[str, str, float]] = set()  # (host, model, loaded_at) already looked at
        self.saving = asyncio.Lock()
        self._subs: list[Any] = []
        scale = cfg.rotator.scale
        self.scale_every = min(max(float(scale.sustained) / 4, 0.25), 5.0)

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream=subjects.COMMANDS_STREAM, durable=self.name, subjects=subjects.ROTATOR_COMMANDS,
                handler=self.deliver(PhaseCommand), concurrency=1, deliver_new=True,
                description="phase changes and rotate-now, in order", **self.consumer_defaults(),
            ),
            ConsumerSpec(
                stream=subjects.COMMANDS_STREAM, durable=f"{self.name}-overflow", subjects=(subjects.ROUTER_COMMANDS,),
                handler=self.deliver(OverflowCommand), concurrency=1,
                description="overflow switches, in order, into orch_overflow", **self.consumer_defaults(),
            ),
        ]  # fmt: skip

    async def on_start(self) -> None:
        self.hosts = LiveView(self.js, subjects.KV_HOSTS, Codec(HostState), self.host_changed)
        self.queues = LiveView(self.js, subjects.KV_QUEUES, Codec(QueueState))
        self.tiers = LiveView(self.js, subjects.KV_TIERS, Codec(TierState))
        views: list[LiveView[Any]] = [self.hosts, self.queues, self.tiers]
        for view in views:
            self.spawn(f"view:{view.bucket}", view.run)
        await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in views)), 10.0)
        self.host_starts = {name: s.started_at for name, s in self.hosts.data.items()}
        self.spawn("inbox", self.drain)
        for subject in FOLLOWED:
            self._subs.append(await self.nc.subscribe(subject, cb=self.on_model_event))
        self.switches = await TypedKV.open(self.js, subjects.KV_OVERFLOW, Codec(OverflowState))
        self.overflow = await self.switches.items()
        for key, switch in self.overflow.items():
            self.conductor.overflow_switched(key, switch.tier, mine=self.name in switch.enabled_by)
        self.kv = await TypedKV.open(self.js, subjects.KV_PHASE, Codec(PhaseState))
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
        self.every("scale", self.scale_every, ScaleTick)
        self.trigger(f"start in {self.state.phase}", rotate=None)
        self.spawn("conduct", self.conduct)
        self.log.info("phase %s (since %s, by %s)", self.state.phase, _when(self.state.since), self.state.by)

    async def on_stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # --- the one entry point ---------------------------------------------------------------------
    async def handle(self, msg: RotatorMsg) -> None:
        match msg:
            case PhaseCommand(d):
                await self.command(COMMAND.decode(d.data))
            case OverflowCommand(d):
                await self.switch_overflow(COMMAND.decode(d.data))
            case ModelEvent(data):
                with contextlib.suppress(SchemaError):  # a kind this version cannot read
                    self.executor.on_event(EVENT.decode(data))
            case HostChanged(name, state):
                self.on_host(name, state)
            case ScaleTick():
                await self.conductor.scale_tick()
            case RotationDue():
                self.trigger("scheduled rotation", rotate=None)  # a rotation since it was armed makes it moot

    async def command(self, cmd: AnyCommand) -> None:
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

    async def switch_overflow(self, cmd: AnyCommand) -> None:
        """Store an overflow switch (its one writer); scaling learns which ones are its own."""
        if not isinstance(cmd, SetOverflow):
            raise Permanent(f"not an overflow command: {type(cmd).__name__}")
        assert self.switches is not None
        key = key_of(cmd.model)
        new = overflow.switch(self.overflow.get(key), cmd, time.time())
        if new is None:
            await self.switches.delete(key)
            self.overflow.pop(key, None)
        else:
            await self.switches.put(key, new)
            self.overflow[key] = new
        self.conductor.overflow_switched(key, new.tier if new else None, mine=cmd.by == self.name)
        self.log.info("overflow %s -> %s (by %s)", cmd.model or "all local models",
                      cmd.tier if cmd.enabled else "off", cmd.by or "?")  # fmt: skip

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
        await self.handle(RotationDue())

    async def save(self, state: PhaseState, *, only_in: str | None = None) -> bool:
        """Write the phase record (one write at a time); ``only_in``: only while that phase is current."""
        assert self.kv is not None
        async with self.saving:
            if only_in is not None and self.state.phase != only_in:
                return False
            await self.kv.put(PHASE_KEY, state)
            self.state = state
            return True

    async def save_in(self, state: PhaseState, phase: str) -> bool:
        return await self.save(state, only_in=phase)

    # --- what the hosts do -----------------------------------------------------------------------
    async def on_model_event(self, msg: Any) -> None:
        await self.handle(ModelEvent(msg.data))

    def host_changed(self, name: str, state: HostState | None) -> None:
        """The orch_hosts watch's callback (not a coroutine): into the inbox, handled in order."""
        self.inbox.put_nowait(HostChanged(name, state))

    async def drain(self) -> None:
        while True:
            await self.handle(await self.inbox.get())

    def host(self, name: str) -> HostState | None:
        return self.hosts.get(name) if self.hosts is not None else None

    def on_host(self, name: str, state: HostState | None) -> None:
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


def _data(view: LiveView[T] | None) -> dict[str, T]:
    return view.data if view is not None else {}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
