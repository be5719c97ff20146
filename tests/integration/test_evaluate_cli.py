"""`orchestra ask --evaluate` as a user runs it: the answers of a diverse fan-out, each graded by the
phase's evaluator through the bus (router -> worker; the worker is scripted here, the real SmolLM2 grades
in tests/integration/test_gpu_host_models.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from actors.router.actor import Router
from schemas.config import load_config
from tests.support.actors import Actors
from tests.support.procs import REPO
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

VERDICT = '{"score": 4, "reason": "reverses with a slice"}'
ANSWER = "def reverse(s):\n    return s[::-1]"


@pytest.fixture
async def profile(actors: Actors) -> Path:
    path = actors.profile(
        overrides={"rotator": {"initial_phase": "phase_3_interactive_feedback"}, "cache": {"enabled": False}},
    )
    cfg = load_config(path)
    worker = ScriptedWorker(
        cfg, hosts={"cpu0": ["smollm2-135m", "gemma3-270m"]}, answers={"gemma3-270m": ANSWER, "smollm2-135m": VERDICT}
    )
    await actors.start(worker)
    router = await actors.start(Router(cfg, instance="eval-test-router"))
    await eventually(lambda: router.view.hosts.data)
    return path


def orchestra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "orchestra"), *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


async def test_ask_evaluate_grades_every_answer_with_the_phase_evaluator(profile: Path) -> None:
    """Phase 3 names smollm2-135m as its evaluator: each of the two family answers gets its verdict."""
    out = await _run(profile, "--model", "diverse", "--fanout", "2", "--tier", "local", "--evaluate")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "--- graded by smollm2-135m ---" in lines
    graded = [line for line in lines if line.startswith("score ")]
    assert len(graded) == 2 and all(line.startswith("score 4/5") for line in graded)
    assert any("gemma3-270m (gemma" in line for line in graded) and any(
        "smollm2-135m (smollm" in line for line in graded
    )


async def test_ask_evaluate_names_a_missing_verdict_instead_of_failing(profile: Path) -> None:
    """An evaluator whose text is not a verdict (gemma answers code here) is reported, not a crash."""
    out = await _run(profile, "--model", "smollm2-135m", "--evaluate", "gemma3-270m")
    assert out.returncode == 0, out.stderr
    assert "--- graded by gemma3-270m ---" in out.stdout and "no score  smollm2-135m (smollm): not JSON" in out.stdout


async def _run(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ("--config", str(profile), "ask", "Write a Python function to reverse a string", "--timeout", "20", *args)
    return await asyncio.to_thread(orchestra, *argv)
