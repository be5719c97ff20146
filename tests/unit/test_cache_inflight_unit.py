"""InFlight: the answers on their way of one cache instance — matching, settling, bounds."""

from __future__ import annotations

import numpy as np

from actors.cache.inflight import InFlight
from schemas.cache import PendingStore


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def pending(
    rid: str, key: str, vector: np.ndarray | None = None, scope: str = "s", deadline: float = 100.0
) -> PendingStore:
    return PendingStore(
        request_id=rid,
        key=key,
        scope=scope,
        guard_text="text " + rid if vector is not None else None,
        vector=vector.tobytes() if vector is not None else None,
        deadline=deadline,
        at=0.0,
    )


def yes(cached: str, cosine: float) -> bool:
    return True


def test_the_same_key_matches_first_and_another_scope_or_itself_never() -> None:
    f = InFlight()
    f.add(pending("a", "k1", unit(1, 0)))
    f.add(pending("b", "k2", unit(1, 0.01)))
    f.add(pending("c", "k3", unit(1, 0), scope="other"))
    same = f.match("q", "k2", "s", unit(1, 0), yes, 0.9)
    assert same is not None and same.awaited.pending.request_id == "b" and same.similarity == 1.0
    assert f.match("b", "k2", "other-scope", unit(1, 0), yes, 0.9) is None
    found = f.match("a", "kx", "s", unit(1, 0.0), yes, 0.99)
    assert found is not None and found.awaited.pending.request_id == "b"  # not itself


def test_the_closest_accepted_wins_and_the_verifier_can_refuse() -> None:
    f = InFlight()
    f.add(pending("far", "k1", unit(1, 0.3)))
    f.add(pending("near", "k2", unit(1, 0.05)))
    best = f.match("q", "kq", "s", unit(1, 0), yes, 0.9)
    assert best is not None and best.awaited.pending.request_id == "near" and 0.99 < best.similarity < 1.0
    refused = f.match("q", "kq", "s", unit(1, 0), lambda text, cos: text != "text near", 0.9)
    assert refused is not None and refused.awaited.pending.request_id == "far"
    assert f.match("q", "kq", "s", unit(0, 1), yes, 0.9) is None  # below the floor
    assert f.match("q", "kq", "s", None, yes, 0.9) is None  # not embedded: the exact key only


def test_settling_wakes_the_waiters_and_forgets_the_entry() -> None:
    f = InFlight()
    a = f.add(pending("a", "k1"))
    f.settle("a")
    assert a.done.is_set() and len(f) == 0
    f.settle("a")  # twice is harmless


def test_the_cap_drops_the_oldest_and_deadlines_expire() -> None:
    f = InFlight(cap=2)
    first, second, third = (f.add(pending(rid, "k" + rid, deadline=d)) for rid, d in (("1", 5), ("2", 50), ("3", 100)))
    assert first.done.is_set() and len(f) == 2
    assert f.expire(now=60) == 1 and second.done.is_set() and len(f) == 1
