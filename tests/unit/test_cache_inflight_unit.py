"""InFlight: the answers on their way of one cache instance — matching, settling, bounds."""

from __future__ import annotations

import numpy as np

from actors.cache.inflight import Awaited, InFlight


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def awaited(rid: str, key: str, vector: np.ndarray | None = None, scope: str = "s", deadline: float = 100.0) -> Awaited:
    return Awaited(rid, key, scope, vector, "text " + rid if vector is not None else None, deadline)


def yes(cached: str, cosine: float) -> bool:
    return True


def test_the_same_key_matches_first_and_another_scope_or_itself_never() -> None:
    f = InFlight()
    f.add(awaited("a", "k1", unit(1, 0)))
    f.add(awaited("b", "k2", unit(1, 0.01)))
    f.add(awaited("c", "k3", unit(1, 0), scope="other"))
    same = f.match("q", "k2", "s", unit(1, 0), yes, 0.9)
    assert same is not None and same.awaited.request_id == "b" and same.similarity == 1.0
    assert f.match("b", "k2", "other-scope", unit(1, 0), yes, 0.9) is None
    found = f.match("a", "kx", "s", unit(1, 0.0), yes, 0.99)
    assert found is not None and found.awaited.request_id == "b"  # not itself


def test_the_closest_accepted_wins_and_the_verifier_can_refuse() -> None:
    f = InFlight()
    f.add(awaited("far", "k1", unit(1, 0.3)))
    f.add(awaited("near", "k2", unit(1, 0.05)))
    best = f.match("q", "kq", "s", unit(1, 0), yes, 0.9)
    assert best is not None and best.awaited.request_id == "near" and 0.99 < best.similarity < 1.0
    refused = f.match("q", "kq", "s", unit(1, 0), lambda text, cos: text != "text near", 0.9)
    assert refused is not None and refused.awaited.request_id == "far"
    assert f.match("q", "kq", "s", unit(0, 1), yes, 0.9) is None  # below the floor
    assert f.match("q", "kq", "s", None, yes, 0.9) is None  # not embedded: the exact key only


def test_settling_wakes_the_waiters_and_forgets_the_entry() -> None:
    f = InFlight()
    a = awaited("a", "k1")
    f.add(a)
    f.settle("a")
    assert a.done.is_set() and len(f) == 0
    f.settle("a")  # twice is harmless


def test_the_cap_drops_the_oldest_and_deadlines_expire() -> None:
    f = InFlight(cap=2)
    first, second, third = awaited("1", "k1", deadline=5), awaited("2", "k2", deadline=50), awaited("3", "k3")
    for a in (first, second, third):
        f.add(a)
    assert first.done.is_set() and len(f) == 2
    assert f.expire(now=60) == 1 and second.done.is_set() and len(f) == 1
