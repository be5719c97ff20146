"""The rotator's pure policy on plain data: phases, warm tiers, the rotation choice."""

from __future__ import annotations

import pytest

from policy import phases
from policy.rotation import ages, choose
from schemas.commands import SetPhase
from schemas.config import load_config
from schemas.config.ops import PhaseCfg, PhaseGroupCfg
from schemas.state import PhaseState

LAB = load_config("lab")
LOCAL = load_config("local")
FAMILIES = {n: m.family for n, m in LAB.local_models().items()}


def group(always: list[str] | None = None, pool: list[str] | None = None, size: int = 1) -> PhaseGroupCfg:
    return PhaseGroupCfg(always_loaded=always or [], rotation_pool=pool or [], rotation_size=size)


def walk(phase: PhaseCfg, families: dict[str, str], window: int, n: int) -> list[list[str]]:
    history: list[list[str]] = []
    for _ in range(n):
        picks = choose(phase, families, history, window)
        history.append([m for g in picks.values() for m in g])
    return history


def test_rotation_walks_the_pool_round_when_families_are_equal() -> None:
    """Pool a, b, c of one family each, one at a time, window two: a, b, c, a, b, c."""
    phase = PhaseCfg(groups={"g": group(pool=["a", "b", "c"])}, rotation_frequency=None)
    fams = {"a": "x", "b": "y", "c": "z"}
    assert walk(phase, fams, 2, 6) == [["a"], ["b"], ["c"], ["a"], ["b"], ["c"]]


def test_rotation_prefers_a_family_not_loaded_yet() -> None:
    """Always-loaded llama: of a llama and a qwen model in the pool, qwen first, and the llama one only when
    qwen was just loaded."""
    phase = PhaseCfg(groups={"g": group(always=["l70"], pool=["l8", "q7"])}, rotation_frequency=None)
    fams = {"l70": "llama", "l8": "llama", "q7": "qwen"}
    assert walk(phase, fams, 1, 4) == [["q7"], ["l8"], ["q7"], ["l8"]]


def test_a_family_already_present_is_passed_over_while_another_is_fresh() -> None:
    """Window one: 'same' (the always-loaded family) never comes while two other families alternate."""
    phase = PhaseCfg(groups={"g": group(always=["base"], pool=["same", "b", "c"])}, rotation_frequency=None)
    fams = {"base": "f0", "same": "f0", "b": "f1", "c": "f2"}
    assert walk(phase, fams, 1, 4) == [["b"], ["c"], ["b"], ["c"]]
    assert walk(phase, fams, 2, 3)[-1] == ["same"]  # a longer window forces it in


def test_groups_pick_diverse_families_together() -> None:
    """The lab's phase 3: two code generators and one test evaluator, all of families the phase does not
    hold yet, no two alike."""
    phase = LAB.phases["phase_3_interactive_feedback"]
    picks = choose(phase, FAMILIES, [], LAB.rotator.recent_window)
    chosen = picks["code_generators"] + picks["testing_evaluators"]
    assert len(picks["code_generators"]) == 2 and len(picks["testing_evaluators"]) == 1
    always = {FAMILIES[m] for g in phase.groups.values() for m in g.always_loaded}
    families = [FAMILIES[m] for m in chosen]
    assert len(set(families)) == 3 and not set(families) & always


def test_lab_phase_2_skips_models_of_the_always_loaded_families_first() -> None:
    """Phase 2 keeps llama3.1-70b and mistral-large: the first picks are neither llama nor mistral."""
    picks = choose(LAB.phases["phase_2_context_engineering"], FAMILIES, [], 2)["primary"]
    assert {FAMILIES[m] for m in picks} == {"phi", "qwen"}


def test_recently_loaded_models_wait_their_turn_and_the_oldest_fills_a_short_pool() -> None:
    """Every pool model recent: the one chosen longest ago comes back."""
    phase = PhaseCfg(groups={"g": group(pool=["a", "b", "c"])}, rotation_frequency=None)
    fams = {"a": "x", "b": "y", "c": "z"}
    assert choose(phase, fams, [["c"], ["a"], ["b"]], 5) == {"g": ["c"]}
    assert ages([["c"], ["a"], ["b"]]) == {"b": 1, "a": 2, "c": 3}


def test_excluded_models_are_never_chosen_and_kept_groups_stay() -> None:
    phase = PhaseCfg(groups={"g": group(pool=["a", "b"]), "h": group(pool=["c", "d"])}, rotation_frequency=None)
    fams = {"a": "x", "b": "y", "c": "x", "d": "z"}
    assert choose(phase, fams, [], 0, exclude={"a"}) == {"g": ["b"], "h": ["c"]}
    assert choose(phase, fams, [], 0, exclude={"c"}, keep={"g": ["a"]}) == {"g": ["a"], "h": ["d"]}


def test_wants_lists_always_loaded_then_rotation_picks_with_their_tiers() -> None:
    phase = PhaseCfg(
        groups={"g": group(always=["a", "cold-one"], pool=["b", "c"])},
        rotation_frequency=None,
        keep_alive={"cold-one": "cold", "c": "warm", "extra": "hot"},
    )
    wants = phases.wants(LAB, phase, {"g": ["b"]})
    assert [(w.model, w.keep_alive, w.rotation) for w in wants] == [
        ("a", "hot", False), ("b", "hot", True), ("extra", "hot", False),
    ]  # fmt: skip
    assert phases.tier_of("c", LAB, phase, {"g": ["b"]}) == "warm"  # out of rotation: its override
    assert phases.tier_of("c", LAB, phase, {"g": ["c"]}) == "hot"  # a rotation pick is pinned


def test_library_hot_models_outside_the_phase_are_warm() -> None:
    """llama3.1-70b is hot in the library; a phase that does not name it keeps it warm, not pinned."""
    phase = PhaseCfg(groups={"g": group(always=["phi-4"])}, rotation_frequency=None)
    assert phases.tier_of("llama3.1-70b", LAB, phase, {}) == "warm"
    assert phases.tier_of("testing-llama-7b", LAB, phase, {}) == "warm"  # the library default


def test_local_profile_rotates_both_models_and_keeps_the_other_usable() -> None:
    """Local phases 1-2 rotate SmolLM2 and Gemma one at a time; the other stays warm (1) or cold (2)."""
    for name, tier in (("phase_1_subject_expertise", "warm"), ("phase_2_context_engineering", "cold")):
        phase = LOCAL.phases[name]
        first = choose(phase, {n: m.family for n, m in LOCAL.local_models().items()}, [], 1)
        second = choose(phase, {n: m.family for n, m in LOCAL.local_models().items()}, [first["primary"]], 1)
        assert {first["primary"][0], second["primary"][0]} == {"smollm2-135m", "gemma3-270m"}
        out = second["primary"][0] == "smollm2-135m" and "gemma3-270m" or "smollm2-135m"
        assert phases.tier_of(out, LOCAL, phase, second) == tier


def test_phase_change_keeps_history_and_refuses_unknown_phases() -> None:
    state = PhaseState(phase="phase_1_subject_expertise", since=1.0, rotation={"primary": ["a"]}, history=[["a"]],
                       rotations=3, rotated_at=5.0)  # fmt: skip
    new = phases.change_phase(state, SetPhase(phase="phase_4_production", by="op"), LAB, 10.0)
    assert new == PhaseState(phase="phase_4_production", since=10.0, by="op", history=[["a"]])
    assert phases.change_phase(new, SetPhase(phase="phase_4_production"), LAB, 11.0) is None
    with pytest.raises(ValueError, match="unknown phase 'phase_9'") as err:
        phases.change_phase(state, SetPhase(phase="phase_9"), LAB, 10.0)
    assert "phase_1_subject_expertise" in str(err.value)


def test_rotation_is_due_without_picks_or_after_its_frequency() -> None:
    phase = LAB.phases["phase_1_subject_expertise"]
    fresh = PhaseState(phase="phase_1_subject_expertise", since=0.0)
    assert phases.rotation_due(fresh, phase, 100.0)
    picked = PhaseState(phase="phase_1_subject_expertise", rotation={"primary": ["yi-coder-9b"]}, rotated_at=100.0)
    assert not phases.rotation_due(picked, phase, 100.0 + 11 * 3600)
    assert phases.rotation_due(picked, phase, 100.0 + 12 * 3600)
    assert not phases.rotation_due(PhaseState(phase="phase_4_production"), LAB.phases["phase_4_production"], 1e9)
