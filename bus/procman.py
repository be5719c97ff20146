"""The process supervisor of ``orchestra up``: the Procfile's lines as child processes, kept running.

Honcho stops every process when one exits; here a process that exits on its own is restarted after a
backoff (1 s, doubling up to 30 s; back to 1 s once it has run a minute), each restart reported through
``on_restart``. Only ``stop()`` (``orchestra up`` calls it on Ctrl-C or SIGTERM) ends the whole set:
SIGTERM to every actor, a grace period, SIGKILL to what is left, and the ``nats`` line last, so the
actors drain into a live server. Output is prefixed per process like honcho's (``12:00:01 router | ...``).
Each child runs in its own session: a Ctrl-C in the terminal reaches the supervisor, which decides.

The Procfile stays the declaration of what runs; ``honcho start`` still runs it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
LAST_TO_STOP = ("nats",)  # the bus outlives the actors: they drain into it (and nats-1... of a cluster)


def _last_to_stop(name: str) -> bool:
    return name in LAST_TO_STOP or any(name.startswith(f"{n}-") for n in LAST_TO_STOP)


@dataclass(frozen=True)
class ProcLine:
    name: str
    command: str


def read_procfile(path: Path) -> list[ProcLine]:
    lines = []
    for raw in path.read_text().splitlines():
        m = _LINE.match(raw.strip())
        if m and not raw.lstrip().startswith("#"):
            lines.append(ProcLine(m.group(1), m.group(2)))
    return lines


def restart_delay(restarts_in_a_row: int, base: float = 1.0, cap: float = 30.0) -> float:
    """The wait before restart number ``restarts_in_a_row`` (1, 2, ...): base, 2 base, 4 base, ... cap."""
    return min(cap, base * 2 ** max(0, min(restarts_in_a_row - 1, 30)))


@dataclass(frozen=True)
class Restart:
    """One process exited by itself and is restarted after ``delay_s``."""

    name: str
    exit_code: int
    restarts: int  # restarts of this process since `orchestra up` started
    delay_s: float
    at: float = field(default_factory=time.time)


@dataclass
class _Child:
    line: ProcLine
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    in_a_row: int = 0


class ProcessManager:
    def __init__(
        self,
        lines: list[ProcLine],
        *,
        env: dict[str, str],
        cwd: Path,
        on_restart: Callable[[Restart], Awaitable[None]] | None = None,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        grace: float = 10.0,
        out: TextIO = sys.stdout,
    ) -> None:
        self.children = [_Child(line) for line in lines]
        self.env = env
        self.cwd = cwd
        self.on_restart = on_restart
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.grace = grace
        self.out = out
        self.width = max((len(line.name) for line in lines), default=4)
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> int:
        """Run every line until ``stop()``; then stop them all. Returns 0."""
        tasks = [asyncio.create_task(self._keep(child)) for child in self.children]
        await self.stopping.wait()
        await self._stop_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return 0

    def say(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.out.write(f"{stamp} {name:<{self.width}} | {text}\n")
        self.out.flush()

    async def _keep(self, child: _Child) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            child.proc = await asyncio.create_subprocess_shell(
                child.line.command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
            self.say(child.line.name, f"started (pid {child.proc.pid})")
            pump = asyncio.create_task(self._pump(child.line.name, child.proc))
            code = await child.proc.wait()
            await pump
            if self.stopping.is_set():
                self.say(child.line.name, f"stopped (exit {code})")
                return
            child.in_a_row = 1 if time.monotonic() - started > 60 else child.in_a_row + 1
            child.restarts += 1
            delay = restart_delay(child.in_a_row, self.backoff, self.max_backoff)
            self.say(child.line.name, f"exited with {code}: restart {child.restarts} in {delay:g}s")
            if self.on_restart is not None:
                try:
                    await self.on_restart(Restart(child.line.name, code, child.restarts, delay))
                except Exception:
                    log.exception("reporting the restart of %s failed", child.line.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _pump(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            self.say(name, raw.decode(errors="replace").rstrip("\n"))

    async def _stop_all(self) -> None:
        first = [c for c in self.children if not _last_to_stop(c.line.name)]
        last = [c for c in self.children if _last_to_stop(c.line.name)]
        for group in (first, last):
            await self._stop_group(group)

    async def _stop_group(self, group: list[_Child]) -> None:
        running = [c for c in group if c.proc is not None and c.proc.returncode is None]
        for child in running:
            assert child.proc is not None
            _signal(child.proc, signal.SIGTERM)
        waits = [asyncio.create_task(c.proc.wait()) for c in running if c.proc is not None]
        if not waits:
            return
        _done, pending = await asyncio.wait(waits, timeout=self.grace)
        for child in running:
            if child.proc is not None and child.proc.returncode is None:
                self.say(child.line.name, f"still running {self.grace:g}s after SIGTERM: SIGKILL")
                _signal(child.proc, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending, timeout=5)


def _signal(proc: asyncio.subprocess.Process, signum: int) -> None:
    """The child's whole process group (a shell line's children too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)
