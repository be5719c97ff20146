"""Eviction and keep-alive on plain data: A B A A C must not thrash; load time and recent use both count."""

from __future__ import annotations

from policy.eviction import Resident, Usage, choose_victims, eviction_order, expired

GB = 1_000_000_000


def resident(
    name: str, *, uses: float = 1.0, last: float = 0.0, load_s: float = 1.0, keep: str = "warm", busy: bool = False
) -> Resident:
    return Resident(name, {"c": GB}, keep, busy, Usage(uses=uses, updated=last, last_used=last), load_s, loaded_at=0.0)


def simulate(pattern: str, capacity: int, load_s: dict[str, float]) -> list[str]:
    """Serve an access pattern with room for ``capacity`` models of 1 GB; returns the loads made."""
    loaded: dict[str, Usage] = {}
    history: dict[str, Usage] = {}
    loads = []
    for t, name in enumerate(pattern):
        now = float(t)
        if name not in loaded:
            residents = [
                Resident(n, {"c": GB}, "warm", False, u, load_s[n], 0.0) for n, u in loaded.items()
            ]  # fmt: skip
            victims = choose_victims(residents, lambda gone: len(loaded) - len(gone) < capacity, now)
            assert victims is not None
            for v in victims:
                del loaded[v]
            loads.append(name)
        history[name] = history.get(name, Usage()).used(now)
        loaded[name] = history[name]
    return loads


def test_a_b_a_a_c_does_not_evict_a() -> None:
    """With room for two, C replaces B (used once), never A (used three times)."""
    assert simulate("ABAAC" + "A", 2, dict.fromkeys("ABC", 1.0)) == ["A", "B", "C"]


def test_repeating_pattern_loads_the_frequent_model_once() -> None:
    """A B A A C repeated: A stays loaded throughout; only the rare models come and go."""
    loads = simulate("ABAAC" * 6, 2, dict.fromkeys("ABC", 1.0))
    assert loads.count("A") == 1
    assert len(loads) == 1 + 2 * 6  # A once; B and C take turns in the second slot


def test_slow_to_load_model_is_kept_over_a_quick_one_used_as_often() -> None:
    """B (60 s to load, the 70B) and C (1 s) used equally: the next load evicts C."""
    residents = [resident("B", uses=2, last=10, load_s=60.0), resident("C", uses=2, last=10, load_s=1.0)]
    assert choose_victims(residents, lambda gone: len(gone) >= 1, now=10) == ["C"]


def test_recent_use_outweighs_old_use() -> None:
    """Uses decay (half-life 10 min): 4 uses an hour ago count less than 1 use now."""
    old = resident("old", uses=4, last=0)
    new = resident("new", uses=1, last=3600)
    assert [r.name for r in eviction_order([old, new], now=3600)] == ["old", "new"]


def test_hot_and_busy_models_are_never_evicted() -> None:
    """Pinned (hot) and busy models are not candidates; when only they could make room, no victims."""
    residents = [resident("hot", keep="hot", uses=0), resident("busy", busy=True, uses=0)]
    assert choose_victims(residents, lambda gone: len(gone) >= 1, now=0) is None


def test_cold_models_go_first() -> None:
    """A cold model is evicted before a warm one of less value."""
    order = eviction_order([resident("warm", uses=0.1), resident("cold", keep="cold", uses=10)], now=0)
    assert [r.name for r in order] == ["cold", "warm"]


def test_only_the_victims_needed_are_unloaded() -> None:
    """Freeing 1 model's room takes one victim, not every evictable model."""
    residents = [resident(n, uses=u) for n, u in (("x", 1), ("y", 2), ("z", 3))]
    assert choose_victims(residents, lambda gone: len(gone) >= 1, now=0) == ["x"]
    assert choose_victims(residents, lambda gone: False, now=0) is None
    assert choose_victims(residents, lambda gone: True, now=0) == []


def test_keep_alive_tiers() -> None:
    """Warm: unloaded after its TTL idle; cold: as soon as idle; hot and busy: never."""
    residents = [
        resident("warm-idle", last=0),
        resident("warm-recent", last=250),
        resident("cold", keep="cold", last=299),
        resident("hot", keep="hot", last=0),
        resident("busy", busy=True, last=0),
    ]
    assert expired(residents, now=300, ttl=lambda _: 300.0) == ["warm-idle", "cold"]
