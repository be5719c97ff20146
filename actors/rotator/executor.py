"""Carrying out plan steps on the gpu_hosts: send the command, follow the host until the outcome.

    ex = Executor(send=actor.send, host=hosts_view.get, step_timeout=300)
    ex.on_event(event)            # model.* and oom events, from a subscription
    ex.on_host(name, state)       # HostState changes, from the orch_hosts watch
    failures = await ex.run(plan.by_host(), reason="rotation")

Hosts are driven in parallel, the steps of one host in order (unloads before loads, so its cards stay
within memory after every step). A host's sequence stops at its first failure. A step is done when the
host says so — ``model.loaded`` / ``model.unloaded`` / ``model.keep_alive`` after the command, or its
state showing the outcome (a load of a model already there, kept as asked, emits nothing) — and failed on
``model.load_failed``, ``oom``, the host going down, or no outcome within ``rotator.step_timeout``. The
gpu_host drains a model before unloading it, so requests in flight finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from policy.planner import Step
from schemas.commands import Command, LoadModel, UnloadModel
from schemas.events import Event, ModelKeepAlive, ModelLoaded, ModelLoadFailed, ModelUnloaded, Oom
from schemas.state import HostState

log = logging.getLogger(__name__)
STATE_GRACE_S = 5.0  # a host writes its state within a heartbeat of a change
FailureKind = Literal["load_failed", "oom", "timeout", "host_down", "send_failed"]


@dataclass(frozen=True)
class Failure:
    step: Step
    kind: FailureKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.step.host}: {self.step.action} {self.step.model} failed ({self.kind}: {self.detail})"


Done = Literal["done"]


class Executor:
    def __init__(
        self,
        send: Callable[[Command], Awaitable[Any]],
        host: Callable[[str], HostState | None],
        step_timeout: float,
        by: str = "rotator",
    ) -> None:
        self.send, self.host, self.step_timeout, self.by = send, host, step_timeout, by
        self.events: deque[tuple[float, Event]] = deque(maxlen=2000)
        self._changed = asyncio.Event()

    # --- inputs ----------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if isinstance(event, ModelLoaded | ModelUnloaded | ModelKeepAlive | ModelLoadFailed | Oom):
            self.events.append((time.monotonic(), event))
            self._wake()

    def on_host(self, name: str, state: HostState | None) -> None:
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- running ---------------------------------------------------------------------------------
    async def run(self, by_host: Mapping[str, list[Step]], reason: str) -> list[Failure]:
        results = await asyncio.gather(*(self._host(steps, reason) for steps in by_host.values()))
        return [f for failures in results for f in failures]

    async def _host(self, steps: list[Step], reason: str) -> list[Failure]:
        for step in steps:
            failure = await self.step(step, reason)
            if failure is not None:
                log.warning("%s", failure)
                return [failure]
        return []

    async def step(self, step: Step, reason: str) -> Failure | None:
        sent = time.monotonic()
        why = f"{reason}: {step.why}" if step.why else reason
        cmd: Command
        if step.action == "unload":
            cmd = UnloadModel(host=step.host, model=step.model, reason=why, by=self.by)
        else:
            cmd = LoadModel(host=step.host, model=step.model, keep_alive=step.keep_alive, reason=why, by=self.by)
        try:
            await self.send(cmd)
        except Exception as exc:  # NATS gone for longer than the publish retries
            return Failure(step, "send_failed", str(exc))
        log.info("sent %s", step)
        try:
            async with asyncio.timeout(self.step_timeout):
                while True:
                    changed = self._changed
                    outcome = self._outcome(step, sent)
                    if isinstance(outcome, Failure):
                        return outcome
                    if outcome == "done":
                        return None
                    with contextlib.suppress(TimeoutError):  # a look now and then, events or not
                        await asyncio.wait_for(changed.wait(), 1.0)
        except TimeoutError:
            return Failure(step, "timeout", f"no outcome from {step.host} within {self.step_timeout:g}s")

    def _outcome(self, step: Step, sent: float) -> Failure | Done | None:
        """A failure as soon as the host reports one; done once the host's state (what the next plan reads)
        shows the outcome — or, should the state never show it (gone again at once), a while after the event."""
        said_done: float | None = None
        for seen, ev in reversed(self.events):
            if seen < sent:
                break
            if getattr(ev, "host", None) != step.host or getattr(ev, "model", None) != step.model:
                continue
            if step.action == "unload" and isinstance(ev, ModelUnloaded):
                said_done = seen
            if step.action == "keep_alive" and isinstance(ev, ModelKeepAlive) and ev.keep_alive == step.keep_alive:
                said_done = seen
            if step.action != "unload":
                if isinstance(ev, ModelLoaded):
                    said_done = seen
                elif isinstance(ev, ModelLoadFailed):
                    return Failure(step, "load_failed", ev.error.message)
                elif isinstance(ev, Oom):
                    return Failure(step, "oom", ev.detail)
        state = self.host(step.host)
        if state is None or not state.up:
            return Failure(step, "host_down", f"{step.host} is not up")
        here = [m for m in state.models if m.model == step.model and not m.draining]
        if step.action == "unload":
            shown = not any(m.model == step.model for m in state.models)
        elif step.action == "load":
            shown = bool(here)
        else:
            shown = any(m.keep_alive == step.keep_alive for m in here)
        if shown or (said_done is not None and time.monotonic() - said_done > STATE_GRACE_S):
            return "done"
        return None
