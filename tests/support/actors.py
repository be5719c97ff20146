"""The one way tests start actors: ``actors`` (tests/conftest.py) writes a profile that points at the test's
nats-server and starts actors in this process (``await actors.start(Router(cfg))``) or as processes
(``await actors.process("actors.router", profile, ready="router started")``); when the test ends they are all
stopped, the last started first.

Nothing here may hang a run: a start that does not finish within START_S fails the test with the actor's
name; a stop that does not finish within STOP_S is abandoned, and whatever the actor still had running
(supervised tasks, consumers, services of a start that failed half-way) is cancelled and closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client as NATS

from bus.actor import Actor
from bus.server import EmbeddedNats
from schemas.config import OrchestraConfig, load_config
from tests.support.procs import ActorProcess, stop_processes
from tests.support.profile import write_profile

START_S = 60.0
STOP_S = 20.0
A = TypeVar("A", bound=Actor)
log = logging.getLogger(__name__)


async def stop_actor(actor: Actor, grace: float = 1.0) -> None:
    """Stop an in-process actor; whatever is still running afterwards is cancelled, never waited on forever."""
    try:
        await asyncio.wait_for(actor.stop(grace=grace), STOP_S)
    except Exception:
        log.exception("%s did not stop cleanly", actor.name)
    # A start that failed half-way leaves started False, so stop() returned at once: close what it opened.
    for consumer in actor.consumers_running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.close(), 5)
    for runner in actor.services_running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.stop(), 5)
    actor.consumers_running.clear()
    actor.services_running.clear()
    await actor.supervisor.stop(timeout=5)


class Actors:
    def __init__(self, nc: NATS, server: EmbeddedNats, tmp_path: Path) -> None:
        self.nc, self.server, self.tmp_path = nc, server, tmp_path
        self.started: list[Actor | ActorProcess] = []

    def profile(self, name: str = "profile", *, base: str = "local", **kw: Any) -> Path:
        """A copy of configs/<base> under the test's directory, pointing at its nats-server
        (``overrides``, ``data_dir`` as in tests.support.profile.write_profile)."""
        return write_profile(self.tmp_path / name, self.server.url, base=base, **kw)

    def config(self, name: str = "profile", **kw: Any) -> OrchestraConfig:
        return load_config(self.profile(name, **kw))

    async def start(self, actor: A, nc: NATS | None = None) -> A:
        """Start ``actor`` in this process on the operator's connection (or ``nc``)."""
        self.started.append(actor)  # first: a start that fails half-way is still cleaned up
        try:
            async with asyncio.timeout(START_S):  # in this task, as the test would start it itself
                await actor.start(nc or self.nc)
        except TimeoutError:
            raise AssertionError(f"{actor.name} did not start within {START_S}s") from None
        return actor

    async def process(
        self,
        module: str,
        profile: Path,
        *args: str,
        env: dict[str, str] | None = None,
        ready: str | None = None,
        timeout: float = 60.0,
    ) -> ActorProcess:
        """Start ``python -m module --config profile`` (stopped by its PID); with ``ready``, wait until it logs
        that line (failing at once, with its log, if it exits first) while the event loop runs on."""
        proc = ActorProcess(module, profile, *args, env=env)
        self.started.append(proc)
        proc.start()
        if ready is not None:
            await proc.until_logged(ready, timeout)
        return proc

    async def stop(self, actor: Actor | ActorProcess, grace: float = 1.0) -> None:
        """Stop one of them now (a test that restarts an actor); it is not stopped again at the end."""
        if actor in self.started:
            self.started.remove(actor)
        if isinstance(actor, ActorProcess):
            await asyncio.to_thread(stop_processes, [actor])
        else:
            await stop_actor(actor, grace)

    async def stop_all(self) -> None:
        while self.started:
            await self.stop(self.started[-1])
