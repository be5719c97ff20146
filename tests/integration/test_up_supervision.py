"""`orchestra up` supervises the Procfile's processes: one that exits is restarted with backoff (an
``actor.restarted`` event, a count in `orchestra status`); the others keep running; only SIGTERM /
Ctrl-C stops the whole set, SIGKILL for a process that ignores SIGTERM past the grace period."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bus.procman import restart_delay
from bus.server import EmbeddedNats
from schemas.events import ActorRestarted
from tests.support.events import Recorder
from tests.support.procs import REPO
from tests.support.profile import write_profile
from tests.support.wait import eventually

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")
PROCFILE = """\
# a line that dies after a moment, one that runs, one that ignores SIGTERM
flaky: exec python -c "import sys, time; print('flaky ran', flush=True); time.sleep(0.2); sys.exit(3)"
steady: exec python -c "import time; print('steady ready', flush=True); time.sleep(600)"
stubborn: exec python -c "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('ready'); time.sleep(600)"
"""


def test_restart_delays_double_up_to_the_cap() -> None:
    assert [restart_delay(n, 1.0, 30.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    assert restart_delay(2, 0.2, 30.0) == pytest.approx(0.4)


async def _orchestra(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        ORCHESTRA, *args, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


@pytest.mark.slow
async def test_an_exiting_process_is_restarted_with_backoff_and_only_sigterm_stops_all(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS
) -> None:
    profile = write_profile(tmp_path / "p", nats_server.url, data_dir=tmp_path / "data")
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE)
    rec = await Recorder.listen(nc, "actor.restarted")
    lines: list[str] = []
    up = await asyncio.create_subprocess_exec(
        ORCHESTRA, "--config", str(profile), "up", "--procfile", str(procfile), "--backoff", "0.3", "--grace", "1",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    async def read() -> None:
        assert up.stdout is not None
        async for raw in up.stdout:
            lines.append(raw.decode().rstrip("\n"))

    reader = asyncio.create_task(read())
    try:
        await eventually(lambda: len([e for e in rec.of(ActorRestarted) if e.actor == "flaky"]) >= 3, timeout=30)
        flaky = [e for e in rec.of(ActorRestarted) if e.actor == "flaky"]
        assert [e.restarts for e in flaky[:3]] == [1, 2, 3]
        assert [e.exit_code for e in flaky[:3]] == [3, 3, 3]
        assert [e.delay_s for e in flaky[:3]] == pytest.approx([0.3, 0.6, 1.2])  # the backoff doubles
        assert any(re.match(r"\d\d:\d\d:\d\d flaky +\| flaky ran$", line) for line in lines)  # prefixed output
        started = (re.search(r"(\w+) +\| started \(pid (\d+)\)", line) for line in lines)
        pids = {m.group(1): int(m.group(2)) for m in started if m}
        for name in ("steady", "stubborn"):
            os.kill(pids[name], 0)  # still running: one process exiting stops nobody else

        rc, out = await _orchestra("--config", str(profile), "status", "--json")
        assert rc == 0, out
        shown = json.loads(out)["processes"]["processes"]
        assert shown["flaky"]["restarts"] >= 3 and shown["flaky"]["last_exit_code"] == 3
        assert shown["steady"]["restarts"] == 0 and shown["stubborn"]["restarts"] == 0
        rc, out = await _orchestra("--config", str(profile), "status")
        assert "PROCESSES (orchestra up)" in out and re.search(r"flaky: restarts=\d+ last_exit=3", out)

        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 20) == 0
        await reader
    finally:
        if up.returncode is None:
            os.killpg(up.pid, signal.SIGKILL)
            await up.wait()
        reader.cancel()
    assert any("stubborn" in line and "SIGKILL" in line for line in lines), lines[-10:]
    for name in ("steady", "stubborn"):
        with pytest.raises(ProcessLookupError):
            os.kill(pids[name], 0)  # stopped and reaped by `orchestra up`
