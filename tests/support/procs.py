"""Start actor processes for tests and stop them by their own PID."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from tests.support.leaks import LOG_FILES

REPO = Path(__file__).resolve().parents[2]


class ActorProcess:
    def __init__(self, module: str, profile: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.module, self.profile, self.args = module, profile, list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: BinaryIO | None = None
        self.log_path = profile.parent / f"{module.replace('.', '_')}-{time.monotonic_ns()}.log"
        LOG_FILES.append(self.log_path)

    def start(self) -> ActorProcess:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--config", str(self.profile), *self.args],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._logged(text, deadline, timeout):
            time.sleep(0.05)

    async def until_logged(self, text: str, timeout: float = 20.0) -> None:
        """``wait_log`` without blocking the event loop: actors running in the test go on meanwhile
        (their heartbeats, watches and timers)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._logged(text, deadline, timeout):
                return
            await asyncio.sleep(0.05)

    def _logged(self, text: str, deadline: float, timeout: float) -> bool:
        """Whether ``text`` is in the log; AssertionError (with the log) if the process exited or time is up."""
        if text in self.output():
            return True
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"{self.module} exited {self.proc.returncode}:\n{self.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{self.module}: {text!r} not logged within {timeout}s:\n{self.output()}")
        return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"{self.module} did not stop within {timeout}s:\n{self.output()}") from None
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.terminate(10)
            except AssertionError:
                pass
        if self.log is not None:
            self.log.close()


def stop_processes(started: list[ActorProcess]) -> None:
    """Stop them by their own PID, the last started first (SIGTERM, then SIGKILL after 10 s)."""
    for proc in reversed(started):
        proc.stop()


async def orchestra(profile: Path, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run the ``orchestra`` command without blocking the event loop (in-process actors keep running):
    (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "orchestra"),
        "--config",
        str(profile),
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"orchestra {' '.join(args)} did not finish within {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def gateway_url(gateway: ActorProcess, timeout: float = 30.0) -> str:
    """The /v1 URL of a gateway started with ``--port 0``, once it listens (from its log line)."""
    await asyncio.to_thread(gateway.wait_log, "gateway listening on", timeout)
    port = re.search(r"gateway listening on http://[^:]+:(\d+)/v1", gateway.output())
    assert port is not None
    return f"http://127.0.0.1:{port.group(1)}/v1"
