"""Restarts seen by ``orchestra up``'s supervisor: kept in ``<data_dir>/up/restarts.json`` (which
``orchestra status`` shows) and published as ``actor.restarted`` events on the bus, as the operator.

The event is best effort (the process that exited may be the nats-server itself): it is sent once the
bus answers, within a minute; the file is the record that never depends on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from bus import permissions, subjects
from bus.connect import connect
from bus.procman import Restart
from schemas.codec import encode
from schemas.config.root import OrchestraConfig
from schemas.events import ActorRestarted

log = logging.getLogger(__name__)
PUBLISH_WITHIN_S = 60.0


def restarts_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "up" / "restarts.json"


def read_restarts(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The supervisor's record, or None when no `orchestra up` wrote one under this data dir."""
    try:
        data = json.loads(restarts_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RestartReporter:
    def __init__(self, cfg: OrchestraConfig, path: Path, names: list[str]) -> None:
        self.cfg = cfg
        self.path = path
        self.record: dict[str, Any] = {"processes": {n: {"restarts": 0} for n in names}}
        self.nc: NATS | None = None
        self.connecting: asyncio.Task[NATS] | None = None
        self.sending: set[asyncio.Task[None]] = set()
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=2))
        tmp.replace(self.path)  # readers never see half a file

    async def report(self, restart: Restart) -> None:
        self.record["processes"][restart.name] = {
            "restarts": restart.restarts,
            "last_exit_code": restart.exit_code,
            "last_restart_at": restart.at,
            "next_delay_s": restart.delay_s,
        }
        self._write()
        event = ActorRestarted(
            actor=restart.name,
            exit_code=restart.exit_code,
            restarts=restart.restarts,
            delay_s=restart.delay_s,
            at=restart.at,
            source="orchestra-up",
        )
        task = asyncio.create_task(self._publish(event))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _connection(self) -> NATS:
        if self.nc is not None:
            return self.nc
        if self.connecting is None:
            self.connecting = asyncio.create_task(
                connect(
                    self.cfg.bus,
                    name="orchestra-up",
                    role=permissions.OPERATOR,
                    data_dir=self.cfg.data_dir,
                    wait=PUBLISH_WITHIN_S,
                    quiet=True,
                )
            )
        self.nc = await asyncio.shield(self.connecting)
        return self.nc

    async def _publish(self, event: ActorRestarted) -> None:
        try:
            nc = await asyncio.wait_for(self._connection(), PUBLISH_WITHIN_S)
            await nc.jetstream().publish(subjects.event(event), encode(event), timeout=PUBLISH_WITHIN_S)
        except Exception as exc:  # the record on disk stays; the bus may be what is restarting
            log.warning("actor.restarted for %s not published: %s", event.actor, exc)
            if self.connecting is not None and self.connecting.done():
                self.connecting = None  # try a fresh connection next time

    async def close(self) -> None:
        for task in list(self.sending):
            task.cancel()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
