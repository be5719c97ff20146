"""The suite's watchdog (tests/support/watchdog.py) in a pytest run of its own, on a temporary test file:
a hanging test fails with pytest-timeout's message and the run goes on; a teardown that will not stop
ends the whole run, naming the test, with the tracebacks, instead of hanging it. And the actor fixture's
stop leaves nothing of a half-started actor running."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bus.actor import Actor
from tests.support.actors import stop_actor
from tests.support.procs import REPO
from tests.support.profile import test_config

HANGS = """
import time

import pytest


def test_hangs():
    time.sleep(600)


def test_after_the_hang():
    assert True


@pytest.fixture
def stubborn():
    yield
    while True:  # swallows pytest-timeout's exception and blocks again
        try:
            time.sleep(600)
        except BaseException:
            pass


def test_teardown_never_ends(stubborn):
    assert True


def test_never_reached():
    assert True
"""


def pytest_run(tmp_path: Path, *args: str, watchdog_s: str = "420") -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_hangs.py").write_text(HANGS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRA_TEST_WATCHDOG_S": watchdog_s}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.watchdog", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # far past both limits: reaching it means the watchdog failed
    )


def test_a_hanging_test_fails_with_a_timeout_and_the_run_goes_on(tmp_path: Path) -> None:
    """A test stuck in its call is failed by pytest-timeout with its message; the next test still runs."""
    run = pytest_run(tmp_path, "--timeout=2", "test_hangs.py::test_hangs", "test_hangs.py::test_after_the_hang")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Timeout (>2.0s) from pytest-timeout" in run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout


def test_a_teardown_that_never_ends_stops_the_run_with_a_clear_message(tmp_path: Path) -> None:
    """A teardown that swallows the timeout and blocks again meets the hard limit: the run ends with
    exit status 3, a line naming the test and the tracebacks; no later test runs."""
    tests = ["test_hangs.py::test_teardown_never_ends", "test_hangs.py::test_never_reached"]
    run = pytest_run(tmp_path, "--timeout=1", "-v", *tests, watchdog_s="4")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "WATCHDOG: test_hangs.py::test_teardown_never_ends still running after 4s" in run.stderr
    assert "in stubborn" in run.stderr  # the traceback shows where it hangs
    assert "test_never_reached" not in run.stdout


async def test_a_half_started_actor_leaves_no_task_running(tmp_path: Path) -> None:
    """An actor whose start failed after it spawned a supervised task (its stop() does nothing then): the
    fixture's stop cancels the task instead of leaving it to hang the loop's teardown."""
    actor = Actor(test_config(tmp_path / "p", "nats://127.0.0.1:1"))
    forever = asyncio.Event()
    task = actor.spawn("forever", forever.wait)
    assert not actor.started
    await stop_actor(actor)
    assert task.cancelled() and not actor.supervisor.tasks
