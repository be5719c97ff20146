"""bus/heap.py: freed heap memory goes back to the system, at most once per period."""

from __future__ import annotations

import platform

from bus.heap import Trimmer, map_large, trim


def test_trim_returns_free_pages_on_glibc() -> None:
    assert trim() is (platform.libc_ver()[0] == "glibc")


def test_the_trimmer_trims_at_most_once_per_period() -> None:
    t = Trimmer(every=30.0)
    assert [t.maybe(now) for now in (100.0, 110.0, 129.9, 130.0, 131.0)] == [True, False, False, True, False]
    assert t.count == (2 if platform.libc_ver()[0] == "glibc" else 0)


def test_large_blocks_can_be_served_by_their_own_mappings_on_glibc() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert map_large(128 * 1024) is glibc
    assert Trimmer(map_large_from=128 * 1024).mapped is glibc and not Trimmer().mapped
