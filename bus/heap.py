"""Give the heap memory an actor freed back to the system (glibc ``malloc_trim``), so its RSS follows
what it holds rather than the most it ever held.

Without it, memory freed in the middle of the C heap (numpy arrays replaced by larger ones, a burst of
in-flight requests drained, message buffers) stays counted in RSS: an actor's RSS creeps up with
traffic over hours although what it keeps is bounded. ``Trimmer.maybe(now)`` trims at most once per
``every`` seconds (a few milliseconds of CPU for a heap of tens of MB); elsewhere than glibc it does
nothing.

    trimmer = Trimmer(every=30.0)       (map_large_from=128 * 1024: map_large too)
    trimmer.maybe(time.monotonic())     -> True if it trimmed now
    map_large(128 * 1024)               allocations this large and larger: mapped, unmapped when freed

``map_large`` fixes glibc's mmap threshold (by default it rises to the largest block ever freed, up to
32 MB, so arrays that grow by copies, such as the budget_guard's sorted charge keys, end up in the
heap, where each copy leaves a hole a larger one does not fit): every block of at least that size is
its own mapping, given back the moment it is freed. Costs a system call per such allocation: for an
actor whose large allocations are rare (the guard: one merge per 16,384 charges).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _glibc(name: str, argtypes: list[type]) -> Callable[..., int] | None:
    """The C library's function ``name`` (None where it has none: musl, macOS)."""
    lib = ctypes.util.find_library("c")
    try:
        fn = getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


_TRIM = _glibc("malloc_trim", [ctypes.c_size_t])
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)


def map_large(threshold: int = 128 * 1024) -> bool:
    """Serve every allocation of ``threshold`` bytes or more by its own mapping (glibc). False: not here."""
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def trim() -> bool:
    """Return the free pages of every malloc arena to the system now. False: not available here."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Trimmer:
    def __init__(self, every: float = 30.0, *, map_large_from: int | None = None) -> None:
        """``map_large_from``: also call :func:`map_large` with that threshold (for this whole process)."""
        self.mapped = map_large(map_large_from) if map_large_from else False
        self.every = every
        self.last = float("-inf")
        self.count = 0

    def maybe(self, now: float) -> bool:
        if now - self.last < self.every:
            return False
        self.last = now
        self.count += trim()
        return True
