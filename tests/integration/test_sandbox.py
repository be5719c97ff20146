"""The sandbox that runs code answers on a request's examples: real subprocesses, real limits."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from actors.router.sandbox import Limits, run_candidate, run_candidates
from tests.support.wait import eventually

ROOMY = Limits(example_s=30.0, wall_s=60.0)  # generous: the machine is shared, the limits under test are others


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on loopback that accepts connections: reachable by anything with network access."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


async def test_candidates_run_on_the_examples_and_their_printing_is_ignored() -> None:
    runs = await run_candidates(
        ["def rev(s):\n    print('noise')\n    return s[::-1]", "def reverse_string(s):\n    return s[1:]"],
        ["reverse_string('abc')", "reverse_string('')"],
        ROOMY,
    )
    assert runs[0].results == ["ok:'cba'", "ok:''"]  # the one function it wrote answers to the prompt's name
    assert runs[1].results == ["ok:'bc'", "ok:''"]


async def test_an_infinite_loop_is_stopped_by_the_example_timer() -> None:
    run = await run_candidate("def f(n):\n    while True:\n        pass", ["f(1)", "len('ab')"], Limits(example_s=0.5))
    assert run.results == ["timeout", "ok:2"] and run.failure is None


async def test_a_loop_that_ignores_the_timer_is_killed_at_the_wall_clock_limit() -> None:
    code = "import signal\ndef f(n):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass"
    run = await run_candidate(code, ["f(1)"], Limits(example_s=0.5, wall_s=2.0))
    assert run.failure == "timeout" and run.results == ["timeout"]


async def test_a_memory_hog_gets_memory_error_under_the_address_space_limit() -> None:
    code = "def f(n):\n    hoard = []\n    while True:\n        hoard.append(bytearray(10**6))"
    run = await run_candidate(code, ["f(1)"], Limits(memory_bytes=128 * 1024 * 1024, example_s=30, wall_s=60))
    assert run.results == ["error:MemoryError"]


async def test_network_is_refused_even_to_a_listening_loopback_port(listener: int) -> None:
    code = f"import socket\ndef f():\n    return socket.create_connection(('127.0.0.1', {listener}), 2).fileno()"
    run = await run_candidate(code, ["f()"], ROOMY)
    assert run.results[0].startswith("error:") and run.results[0] != "error:NameError"


async def test_processes_file_writes_and_ctypes_are_refused() -> None:
    code = (
        "import os, subprocess\n"
        "def shell():\n    return os.system('true')\n"
        "def spawn():\n    return subprocess.run(['true']).returncode\n"
        "def write():\n    return open('x.txt', 'w').write('x')\n"
        "def native():\n    import ctypes\n    return 1\n"
    )
    run = await run_candidate(code, ["shell()", "spawn()", "write()", "native()"], ROOMY)
    assert run.results == ["error:PermissionError"] * 4


async def test_candidates_run_side_by_side() -> None:
    runs = await asyncio.wait_for(run_candidates(["x = 1"] * 3, ["len('abc')"], ROOMY), 120)
    assert [r.results for r in runs] == [["ok:3"]] * 3


async def test_a_cancelled_run_leaves_no_process_behind() -> None:
    """The router stopping mid-judgement kills the candidate's process group (sleep ignores the CPU limit)."""
    code = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(3600)"
    before = _sandbox_pids()
    task = asyncio.ensure_future(run_candidate(code, ["len('')"], ROOMY))
    started = await eventually(lambda: {p for p in _sandbox_pids() - before if _ignores_sigalrm(p)})  # sleeping now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await eventually(lambda: not (_sandbox_pids() & started))


def test_a_cancelled_run_is_reaped_before_the_cancellation_surfaces() -> None:
    """The killed candidate is waited for: closing the loop right after leaves no running subprocess or open pipe
    for the garbage collector to warn about (it once did, and failed whichever test ran next)."""
    code = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(3600)"

    async def cancel_mid_run() -> None:
        before = _sandbox_pids()
        task = asyncio.ensure_future(run_candidate(code, ["len('')"], ROOMY))
        await eventually(lambda: {p for p in _sandbox_pids() - before if _ignores_sigalrm(p)})
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    unraisable: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.object!r}")
    try:
        asyncio.run(cancel_mid_run())  # its own loop, closed the moment the cancellation surfaces
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


def _ignores_sigalrm(pid: int) -> bool:
    """The candidate's first line ran (SIGALRM ignored): the runner has its input and is in candidate code."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(mask & (1 << (14 - 1)))  # SIGALRM is signal 14


def _sandbox_pids() -> set[int]:
    """Children of this test process running the sandbox's runner (its command line carries the mark)."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"orchestra-sandbox" in cmdline and ppid == os.getpid():
            found.add(int(pid))
    return found
