"""The router's live view of the orchestra: KV watches (hosts, tiers, providers, phase, the overflow
switches of orch_overflow), and its own statistics. Reading it does no I/O."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext

from bus import subjects
from bus.kv import LiveView
from bus.overflow import Overflow
from policy.targets import Snapshot
from schemas.codec import Codec
from schemas.review import ModelQuality
from schemas.state import HostState, PhaseState, ProviderState, TierState

log = logging.getLogger(__name__)
EWMA_ALPHA = 0.2


LEADER_SETTLE_S = 5.0


class Link:
    """The router's own connection to the bus, as far as liveness is concerned: while it is down no
    heartbeat can arrive, so nobody is judged; after it comes back every host gets a fresh grace period.
    Fed by the connection's callbacks and, for a connection shared in-process, by polling it."""

    def __init__(self) -> None:
        self.connected = True
        self.since = 0.0  # wall time of the last reconnect (0: never lost)
        self.reconnects = 0
        self.leader: str | None = None  # the hosts bucket's stream leader when last asked

    def lost(self) -> None:
        self.connected = False

    def back(self, now: float | None = None) -> None:
        self.connected = True
        self.since = time.time() if now is None else now

    def bucket(self, leader: str | None, now: float | None = None) -> None:
        """The hosts bucket's leader, asked every tick. None (no leader: its node died and the others are
        electing one, for seconds; or no answer) or a new one: no host could write a heartbeat meanwhile,
        so every host gets a fresh grace period from now."""
        if leader is None or (self.leader is not None and leader != self.leader):
            # A new leader takes a few seconds more before writes succeed again (measured on loopback).
            self.since = (time.time() if now is None else now) + LEADER_SETTLE_S
        if leader is not None:
            self.leader = leader

    def poll(self, connected: bool, reconnects: int) -> None:
        """A connection's state read every tick: a reconnect the callbacks did not report counts too."""
        if not connected:
            self.lost()
        elif not self.connected or reconnects != self.reconnects:
            self.back()
        self.reconnects = reconnects


class View:
    def __init__(self, js: JetStreamContext, link: Link | None = None, *, min_samples: int = 20) -> None:
        self.js = js
        self.min_samples = min_samples  # checks before a model's measured quality replaces its rank
        self.hosts: LiveView[HostState] = LiveView(js, subjects.KV_HOSTS, Codec(HostState))
        self.tiers: LiveView[TierState] = LiveView(js, subjects.KV_TIERS, Codec(TierState))
        self.providers: LiveView[ProviderState] = LiveView(js, subjects.KV_PROVIDERS, Codec(ProviderState))
        self.phase: LiveView[PhaseState] = LiveView(js, subjects.KV_PHASE, Codec(PhaseState))
        self.quality: LiveView[ModelQuality] = LiveView(js, subjects.KV_QUALITY, Codec(ModelQuality))
        self.inflight: dict[str, int] = defaultdict(int)
        self.latency_ms: dict[str, float] = {}
        self.backlog: set[str] = set()
        self.overflow = Overflow(js)  # {model or '*': tier}, written by the rotator
        self.turn = 0
        self.link = link or Link()

    def views(self) -> dict[str, LiveView[object]]:
        views: dict[str, LiveView[Any]] = {
            "hosts": self.hosts,
            "tiers": self.tiers,
            "providers": self.providers,
            "phase": self.phase,
            "quality": self.quality,
        }
        return views

    def measured(self) -> dict[str, float]:
        """Measured quality of the models checked often enough (the others keep their configured rank)."""
        return {
            name: q.measured
            for name, q in self.quality.data.items()
            if q.measured is not None and q.samples >= self.min_samples
        }

    def accuracy(self) -> dict[str, float]:
        """The same measurements as fractions (0..1): the ensemble's confidence for answers without logprobs."""
        return {name: round(q / 10.0, 4) for name, q in self.measured().items()}

    async def wait_ready(self, timeout: float = 10.0) -> None:
        views = list(self.views().values())
        await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in views)), timeout)

    def snapshot(self) -> Snapshot:
        self.turn += 1
        phase = self.phase.get("current")
        return Snapshot(
            now=time.time(),
            hosts=self.hosts.data,
            tiers=self.tiers.data,
            providers=self.providers.data,
            phase=phase.phase if phase else None,
            inflight=self.inflight,
            latency_ms=self.latency_ms,
            backlog=self.backlog,
            overflow=self.overflow.tiers(),
            turn=self.turn,
            observed_since=self.link.since,
            measured=self.measured(),
        )

    def snapshot_light(self) -> Snapshot:
        """Hosts and tiers only, for liveness checks (no round-robin turn)."""
        return Snapshot(
            now=time.time(),
            hosts=self.hosts.data,
            tiers=self.tiers.data,
            providers=self.providers.data,
            observed_since=self.link.since,
        )

    async def hosts_leader(self) -> str | None:
        """The node that leads the hosts bucket's stream now (None: none, or the bus does not answer)."""
        try:
            info = await self.js.stream_info(f"KV_{subjects.KV_HOSTS}")
        except Exception as exc:
            log.debug("no answer about the hosts bucket (%s)", exc)
            return None
        return info.cluster.leader if info.cluster else "standalone"

    async def confirm_stale(self, hosts: set[str], alive: Callable[[str], bool]) -> set[str]:
        """Of hosts whose heartbeat looks stale in the watch, those still stale after a fresh read of their
        state (a watch that fell behind, its consumer lost with a cluster node, is not a dead host); a
        read that fails (the bus is in trouble) judges nobody."""
        confirmed = set()
        for host in hosts:
            try:
                await asyncio.wait_for(self.hosts.refresh(host), 2.0)
            except Exception as exc:
                log.debug("cannot read %s's state now (%s): not judged", host, exc)
                continue
            if not alive(host):
                confirmed.add(host)
        return confirmed

    def started(self, key: str) -> None:
        self.inflight[key] += 1

    def finished(self, key: str, total_ms: float | None = None) -> None:
        if self.inflight.get(key, 0) > 0:
            self.inflight[key] -= 1
        if total_ms is not None and total_ms > 0:
            old = self.latency_ms.get(key)
            self.latency_ms[key] = total_ms if old is None else (1 - EWMA_ALPHA) * old + EWMA_ALPHA * total_ms

    def mark_backlog(self, targets: set[str]) -> None:
        """The targets over their queue threshold now (queues.py): new work prefers the others."""
        self.backlog.clear()
        self.backlog.update(targets)
