"""Queue-depth scaling (§5.2) on plain data: the ladder (another instance, a fast model, overflow), the
sustained and idle clocks, and never undoing what scaling did not do."""

from __future__ import annotations

import msgspec

from policy import scaling
from policy.scaling import Decision, ScaleState
from schemas.config import load_config
from schemas.state import CardState, HostState, LoadedModel, QueueState, TierState

LAB = load_config("lab")
GB = 1_000_000_000
T0 = 1_800_000_000.0
SUSTAINED = float(LAB.rotator.scale.sustained)  # 2 min
IDLE_FOR = float(LAB.rotator.scale.idle_for)  # 15 min


def host(name: str, *models: tuple[str, int, list[str]], queue: int = 0, at: float = T0) -> HostState:
    cards = LAB.hosts[name].cards
    used = {c: 0 for c in cards}
    for _, size, on in models:
        for c in on:
            used[c] += size // len(on)
    return HostState(
        host=name,
        cards=[CardState(card=c, total_bytes=int(LAB.cards[c].memory), used_bytes=used[c]) for c in cards],
        models=[LoadedModel(model=m, bytes=size, cards=on, queue_depth=queue if i == 0 else 0)
                for i, (m, size, on) in enumerate(models)],
        heartbeat_at=at,
    )  # fmt: skip


def full_lab(queue: int, at: float) -> dict[str, HostState]:
    """Every card full except what the test frees; the queue is deepseek-r1-70b's (on m5-p40-c)."""
    return {
        "m5-p40-a": host("m5-p40-a", ("llama3.1-70b", 47 * GB, ["P40_0", "P40_1"]), at=at),
        "m5-p40-b": host("m5-p40-b", ("mistral-large", 47 * GB, ["P40_2", "P40_3"]), at=at),
        "m5-p40-c": host("m5-p40-c", ("deepseek-r1-70b", 47 * GB, ["P40_4", "P40_5"]), queue=queue, at=at),
        "irina-p4": host("irina-p4", ("codellama-7b", 15 * GB, ["P4_0", "P4_1"]), at=at),
        "ws-3050": host("ws-3050", ("phi-3-mini", int(7.5 * GB), ["RTX_3050"]), at=at),
    }


def step(state: ScaleState, hosts: dict[str, HostState], now: float, **kw: object) -> list[Decision]:
    """One scaling tick at ``now`` (the hosts' heartbeats as fresh as then)."""
    hosts = {name: msgspec.structs.replace(h, heartbeat_at=now) for name, h in hosts.items()}
    depth = scaling.depths(hosts, {}, now)
    scaling.observe(state, depth, now, LAB)
    return scaling.decide(state, LAB, now, depth, hosts, kw.get("tiers", {}), kw.get("overflowing", set()),  # type: ignore[arg-type]
                          kw.get("wanted", set()))  # type: ignore[arg-type]  # fmt: skip


def test_depth_is_the_larger_of_the_hosts_queue_and_the_routers_fresh_count() -> None:
    hosts = {"m5-p40-a": host("m5-p40-a", ("llama3.1-70b", 47 * GB, ["P40_0", "P40_1"]), queue=12)}
    queues = {
        "q1": QueueState(target="local:m5-p40-a:llama3.1-70b", depth=60, updated_at=T0),
        "q2": QueueState(target="local:m5-p40-b:mistral-large", depth=70, updated_at=T0 - 60),  # stale
        "q3": QueueState(target="together:together:together/llama3.1-70b", depth=99, updated_at=T0),
    }
    assert scaling.depths(hosts, queues, T0) == {"llama3.1-70b": 60}


def test_a_short_spike_does_nothing_a_sustained_backlog_loads_another_instance_where_there_is_room() -> None:
    """Depth 60 > 50: nothing before 2 minutes; then another instance of the (unpinned) model on the one
    P40 pair with room, never on a full card."""
    state = ScaleState()
    hosts = full_lab(60, T0)
    hosts["m5-p40-b"] = host("m5-p40-b", at=T0)  # an empty pair
    assert step(state, hosts, T0) == []
    assert step(state, hosts, T0 + SUSTAINED - 1) == []
    decisions = step(state, hosts, T0 + SUSTAINED)
    assert [(d.action, d.model, d.for_model, d.host) for d in decisions] == [
        ("up", "deepseek-r1-70b", "deepseek-r1-70b", "m5-p40-b"),
    ]
    assert "backlog on deepseek-r1-70b: 60 pending > 50" in decisions[0].reason


def test_a_fast_model_when_the_backlogged_model_fits_nowhere_else() -> None:
    state = ScaleState()
    hosts = full_lab(60, T0)
    hosts["irina-p4"] = host("irina-p4", at=T0)  # 16 GB free: no 70B, no FP16 llama3.1-8b, but codellama-7b
    step(state, hosts, T0)
    (d,) = step(state, hosts, T0 + SUSTAINED)
    assert (d.action, d.model, d.host) == ("up", "codellama-7b", "irina-p4") and "fast model" in d.reason


def test_no_room_anywhere_overflows_to_together_or_premium_when_together_is_off() -> None:
    state = ScaleState()
    hosts = full_lab(60, T0)
    step(state, hosts, T0)
    (d,) = step(state, hosts, T0 + SUSTAINED)
    assert (d.action, d.model, d.tier) == ("overflow_on", "deepseek-r1-70b", "together")
    off = {"together": TierState(tier="together", enabled=False)}
    other = ScaleState()
    step(other, hosts, T0)
    (p,) = step(other, hosts, T0 + SUSTAINED, tiers=off)
    assert p.tier == "premium"
    waiting = ScaleState(over_since={"deepseek-r1-70b": T0})
    assert step(waiting, hosts, T0 + SUSTAINED, overflowing={"deepseek-r1-70b"}) == []  # someone overflowed it


def test_the_ladder_climbs_one_step_per_sustained_period() -> None:
    """After a scale-up the backlog must persist another period; at max_extra_instances it overflows."""
    state = ScaleState()
    hosts = full_lab(60, T0)
    hosts["m5-p40-b"] = host("m5-p40-b", at=T0)
    step(state, hosts, T0)
    (up,) = step(state, hosts, T0 + SUSTAINED)
    scaling.record(state, up, T0 + SUSTAINED)
    assert step(state, hosts, T0 + SUSTAINED + 1) == []
    state.extras[("irina-p4", "codellama-7b")] = scaling.Extra("irina-p4", "codellama-7b", "deepseek-r1-70b", T0)
    (over,) = step(state, hosts, T0 + 2 * SUSTAINED)
    assert over.action == "overflow_on" and "2 extras run" in over.reason


def test_idle_extras_are_unloaded_and_the_overflow_switched_off_after_idle_for() -> None:
    state = ScaleState(
        extras={("m5-p40-c", "llama3.1-8b"): scaling.Extra("m5-p40-c", "llama3.1-8b", "llama3.1-70b", T0)},
        overflowing={"llama3.1-70b": "together"},
    )
    hosts = full_lab(0, T0)
    hosts["m5-p40-c"] = host("m5-p40-c", ("llama3.1-8b", 25 * GB, ["P40_4", "P40_5"]), at=T0)
    assert step(state, hosts, T0) == []
    assert step(state, hosts, T0 + IDLE_FOR - 1) == []
    decisions = step(state, hosts, T0 + IDLE_FOR)
    assert [(d.action, d.model, d.host) for d in decisions] == [
        ("down", "llama3.1-8b", "m5-p40-c"), ("overflow_off", "llama3.1-70b", None),
    ]  # fmt: skip


def test_scaling_leaves_alone_what_it_did_not_do_and_what_the_phase_adopted() -> None:
    """A fast model the monitor loaded is no extra of ours; an extra the phase now wants is forgotten."""
    hosts = full_lab(0, T0)
    hosts["m5-p40-c"] = host("m5-p40-c", ("llama3.1-8b", 25 * GB, ["P40_4", "P40_5"]), at=T0)
    assert step(ScaleState(), hosts, T0 + IDLE_FOR * 2) == []
    state = ScaleState(extras={("m5-p40-c", "llama3.1-8b"): scaling.Extra("m5-p40-c", "llama3.1-8b", "x", T0)})
    assert scaling.forget(state, hosts, wanted={"llama3.1-8b"}) and not state.extras


def test_extras_that_vanished_are_forgotten() -> None:
    state = ScaleState(extras={("m5-p40-c", "llama3.1-8b"): scaling.Extra("m5-p40-c", "llama3.1-8b", "x", T0)})
    gone = scaling.forget(state, {"m5-p40-c": host("m5-p40-c", at=T0 + 5)}, wanted=set())
    assert [e.model for e in gone] == ["llama3.1-8b"] and not state.extras
