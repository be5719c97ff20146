"""Give the heap memory an actor freed back to the system (glibc ``malloc_trim``), so its RSS follows
what it holds rather than the most it ever held.

Without it, memory freed in the middle of the C heap (numpy arrays replaced by larger ones, a burst of
in-flight requests drained, message buffers) stays counted in RSS: an actor's RSS creeps up with
traffic over hours although what it keeps is bounded. ``Trimmer.maybe(now)`` trims at most once per
``every`` seconds (a few milliseconds of CPU for a heap of tens of MB); elsewhere than glibc it does
nothing.

    trimmer = Trimmer(every=30.0)
    trimmer.maybe(time.monotonic())     -> True if it trimmed now
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        fn = libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return the free pages of every malloc arena to the system now. False: not available here."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Trimmer:
    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self.last = float("-inf")
        self.count = 0

    def maybe(self, now: float) -> bool:
        if now - self.last < self.every:
            return False
        self.last = now
        self.count += trim()
        return True
