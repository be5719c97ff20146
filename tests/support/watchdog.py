"""The suite's watchdog (a pytest plugin, loaded by tests/conftest.py): no failure can hang a run.

Two limits. pytest-timeout fails a test whose setup, call or teardown runs past ``timeout`` (pyproject,
120 s; ``--timeout`` or ``@pytest.mark.timeout`` change it), and the run goes on with the next test. What it
cannot interrupt (a teardown that swallows the exception and blocks again, a thread stuck in C) meets the
hard limit: when one test, setup and teardown included, has run WATCHDOG_S (env
``ORCHESTRA_TEST_WATCHDOG_S``), a line naming the test and every thread's traceback go to stderr and the
run ends with exit status 3. faulthandler's own timer (which needs no Python thread to run) backs it up."""

from __future__ import annotations

import faulthandler
import os
import threading
from collections.abc import Iterator

import pytest

WATCHDOG_S = float(os.environ.get("ORCHESTRA_TEST_WATCHDOG_S", "420"))
BACKUP_S = 30.0  # after the watchdog: faulthandler ends the run if the watchdog's thread could not run
EXIT_STATUS = 3


_stderr: list[int] = []  # the real stderr, kept before pytest captures a test's output


def _fire(nodeid: str, fd: int) -> None:
    line = (
        f"\nWATCHDOG: {nodeid} still running after {WATCHDOG_S:g}s (setup, call and teardown): "
        "the run ends here; every thread's traceback follows\n"
    )
    os.write(fd, line.encode())
    faulthandler.dump_traceback(file=fd, all_threads=True)
    os._exit(EXIT_STATUS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    if not _stderr:  # between tests pytest's capture is suspended: fd 2 is the terminal's (or the log's)
        _stderr.append(os.dup(2))
    timer = threading.Timer(WATCHDOG_S, _fire, args=(item.nodeid, _stderr[0]))
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(WATCHDOG_S + BACKUP_S, exit=True, file=_stderr[0])
    try:
        yield
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
