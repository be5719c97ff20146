"""The ``orchestra`` command as a user runs it: config check, status, audit, ask, watch, up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
import yaml

from bus.server import EmbeddedNats
from schemas.codec import encode
from schemas.events import ModelLoaded, PhaseChanged
from tests.support.procs import REPO
from tests.support.profile import write_profile

ORCHESTRA = [sys.executable, "-m", "cli.__main__"]


def orchestra(*args: str, timeout: float = 30, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "orchestra"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[arg-type]
    )


def test_config_check_passes_for_both_profiles() -> None:
    out = orchestra("config", "check", "all")
    assert out.returncode == 0, out.stderr
    assert "ok: " in out.stdout and "configs/lab" in out.stdout and "configs/local" in out.stdout


def test_config_check_fails_on_a_broken_copy_naming_the_path(tmp_path: Path) -> None:
    broken = tmp_path / "lab"
    import shutil

    shutil.copytree(REPO / "configs" / "lab", broken)
    text = (broken / "phases.yaml").read_text().replace("granite-code-20b, codestral", "granite-21b, codestral")
    (broken / "phases.yaml").write_text(text)
    out = orchestra("config", "check", str(broken))
    assert out.returncode == 1
    assert "rotation_pool[2]: unknown model 'granite-21b'" in out.stderr
    assert "Traceback" not in out.stderr


def test_commands_fail_with_one_line_when_nats_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = write_profile(tmp_path / "p", f"nats://127.0.0.1:{port}")
    out = orchestra("--config", str(profile), "status")
    assert out.returncode == 1
    assert out.stderr.startswith("orchestra: error: no NATS server answered") and "orchestra up" in out.stderr
    assert "Traceback" not in out.stderr


async def test_audit_replays_what_was_published(profile: Path, nats_server: EmbeddedNats) -> None:
    """Events and commands published on the bus come back from `audit` in order, as text and JSON."""
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    js = nc.jetstream()
    from bus.provision import provision
    from schemas.config import load_config

    await provision(js, load_config(profile).bus.streams)
    await js.publish(
        "orch.event.model.loaded", encode(ModelLoaded(host="cpu0", model="smollm2-135m", load_ms=42, at=1.0))
    )
    await js.publish("orch.event.phase.changed", encode(PhaseChanged(previous=None, phase="phase_2", at=2.0)))
    await nc.close()
    out = orchestra("--config", str(profile), "audit", "--since", "10m")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "model.loaded" in lines[0] and "model=smollm2-135m" in lines[0]
    assert "phase.changed" in lines[1] and "phase=phase_2" in lines[1]
    js_out = orchestra("--config", str(profile), "audit", "--since", "10m", "--json", "--subject", "orch.event.phase.>")
    records = [yaml.safe_load(line) for line in js_out.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["phase.changed"]
    assert records[0]["data"]["phase"] == "phase_2"


async def test_status_lists_streams_and_consumers(profile: Path, nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    from bus.provision import provision
    from schemas.config import load_config

    await provision(nc.jetstream(), load_config(profile).bus.streams)
    await nc.close()
    out = orchestra("--config", str(profile), "status")
    assert out.returncode == 0, out.stderr
    for stream in ("REQUESTS", "DISPATCH", "RESULTS", "EVENTS", "COMMANDS", "DEADLETTER"):
        assert stream in out.stdout
    as_json = orchestra("--config", str(profile), "status", "--json")
    assert '"streams"' in as_json.stdout


def test_ask_without_a_router_times_out_with_a_hint(profile: Path) -> None:
    out = orchestra("--config", str(profile), "ask", "hello", "--timeout", "1")
    assert out.returncode == 1
    assert "timeout: no result within 1s" in out.stderr and "orchestra status" in out.stderr


def test_ask_refuses_bad_input_naming_the_field(profile: Path) -> None:
    out = orchestra("--config", str(profile), "ask", "hello", "--temperature", "5")
    assert out.returncode == 1
    assert "sampling.temperature" in out.stderr or "temperature" in out.stderr
    assert "Traceback" not in out.stderr


def test_watch_prints_live_events(profile: Path, nats_server: EmbeddedNats) -> None:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "orchestra"), "--config", str(profile), "watch", "--count", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "watching" in proc.stderr.readline()
        import asyncio

        async def send() -> None:
            nc = await nats.connect(nats_server.url, **nats_server.connect_options())
            await nc.publish("orch.event.host.up", encode({"kind": "host.up", "host": "cpu0", "at": 1.0}))
            await nc.flush()
            await nc.close()

        asyncio.run(send())
        out, _ = proc.communicate(timeout=10)
        assert "host.up" in out and "host=cpu0" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_up_runs_the_procfile_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`orchestra up` starts the embedded nats-server under its supervisor; Ctrl-C stops everything."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = write_profile(tmp_path / "p", f"nats://127.0.0.1:{port}", data_dir=tmp_path / "data")
    doc = yaml.safe_load((profile / "orchestra.yaml").read_text())
    doc["bus"]["embedded"] = {"enabled": True, "port": port}
    (profile / "orchestra.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "orchestra"), "--config", str(profile), "up"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = orchestra("--config", str(profile), "status")
            if status.returncode == 0:
                break
            time.sleep(0.5)
        assert status.returncode == 0, status.stderr
        assert (tmp_path / "data" / "nats").is_dir()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode is not None
        assert "nats-server stopped" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
