"""The rotator as its own process (``python -m actors.rotator``) next to a gpu_host process, driven with
``orchestra phase`` and ``orchestra rotate`` as an operator does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError

from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from schemas.codec import Codec
from schemas.state import HostState
from tests.support.procs import REPO, ActorProcess
from tests.support.rotator import footprint, rig_profile, tiny_models
from tests.support.tiny_models import write_tiny_llama_gguf
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


async def orchestra(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).parent / "orchestra"), *args]
    return await asyncio.to_thread(subprocess.run, cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


async def holds(nc: NATS, expected: dict[str, str], host: str = "cpu0") -> bool:
    """Whether the host's state in KV shows exactly these models (model -> keep-alive)."""
    try:
        kv: TypedKV[HostState] = await TypedKV.open(nc.jetstream(), subjects.KV_HOSTS, Codec(HostState))
    except BucketNotFoundError:  # no actor has started yet
        return False
    state = await kv.get(host)
    return state is not None and {m.model: m.keep_alive for m in state.models if not m.draining} == expected


async def test_operators_set_the_phase_and_rotate_through_the_cli(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, processes: list[ActorProcess]
) -> None:
    """Phase p1 rotates tb/tc next to ta; `phase set p2` swaps to td and waits for phase.changed; `rotate
    now` in p1 prints the plan; an unknown phase is one clear line; SIGTERM stops the rotator with 0."""
    tiny = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    models = tiny_models(tiny, {"ta": "fa", "tb": "fb", "tc": "fc", "td": "fd"})
    phases = {"p1": {"purpose": "rotate b and c", "rotation_frequency": "1h",
                     "groups": {"g": {"always_loaded": ["ta"], "rotation_pool": ["tb", "tc"]}}},
              "p2": {"purpose": "d alone", "groups": {"g": {"always_loaded": ["td"]}}}}  # fmt: skip
    profile = rig_profile(tmp_path / "profile", nats_server.url, models=models, phases=phases, initial="p1",
                          memory=int(footprint(tiny) * 2.5))  # fmt: skip
    processes.append(ActorProcess("actors.gpu_host", profile, "--host", "cpu0").start())
    rotator = ActorProcess("actors.rotator", profile).start()
    processes.append(rotator)
    await eventually(lambda: holds(nc, {"ta": "hot", "tb": "hot"}), timeout=60)

    shown = await orchestra("--config", str(profile), "phase", "show", "--json")
    info = json.loads(shown.stdout)
    assert (info["phase"], info["groups"]["g"]["now"], info["tiers"]["tb"]) == ("p1", ["tb"], "hot")
    listed = await orchestra("--config", str(profile), "phase", "list")
    assert "* p1: rotate b and c (rotates every 1h" in listed.stdout and "  p2: d alone (fixed" in listed.stdout

    rotated = await orchestra("--config", str(profile), "rotate", "now")
    assert rotated.returncode == 0, rotated.stderr
    assert "cpu0: unload tb (room for tc)" in rotated.stdout and "cpu0: load tc hot" in rotated.stdout
    await eventually(lambda: holds(nc, {"ta": "hot", "tc": "hot"}), timeout=30)

    changed = await orchestra("--config", str(profile), "phase", "set", "p2", "--reason", "test")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("phase p1 -> p2 (by operator:")
    await eventually(lambda: holds(nc, {"tc": "warm", "td": "hot"}), timeout=30)  # ta made room; tc stays warm
    again = await orchestra("--config", str(profile), "phase", "set", "p2")
    assert again.stdout.startswith("already in phase p2")

    unknown = await orchestra("--config", str(profile), "phase", "set", "p9")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "orchestra: error: unknown phase 'p9' (phases: " + (
        "phase_1_subject_expertise, phase_2_context_engineering, phase_3_interactive_feedback, phase_4_production, "
        "p1, p2)"
    )
    assert rotator.terminate() == 0
    assert "rotator stopped" in rotator.output() and "Traceback" not in rotator.output()
