"""The swap planner on plain data: the lab profile's cards and models in every phase and through phase
changes and rotations, every card within its memory after every step; refusals name the card and sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from policy import phases, planner
from policy.phases import Want
from policy.planner import Plan, Refusal, Step
from policy.rotation import choose
from schemas.config import OrchestraConfig, load_config
from schemas.state import CardState, HostState, LoadedModel

LAB = load_config("lab")
GB = 1_000_000_000
NOW = 1_800_000_000.0
FAMILIES = {n: m.family for n, m in LAB.local_models().items()}


@dataclass
class Lab:
    """The hosts as the gpu_hosts would report them: exact bytes per card for every loaded model."""

    cfg: OrchestraConfig
    models: dict[str, dict[str, tuple[dict[str, int], str]]] = field(default_factory=dict)  # host -> model
    down: set[str] = field(default_factory=set)

    def states(self) -> dict[str, HostState]:
        out = {}
        for host, hcfg in self.cfg.hosts.items():
            held = self.models.get(host, {})
            used = {c: 0 for c in hcfg.cards}
            for per_card, _ in held.values():
                for card, n in per_card.items():
                    used[card] += n
            out[host] = HostState(
                host=host,
                up=host not in self.down,
                cards=[CardState(card=c, total_bytes=int(self.cfg.cards[c].memory), used_bytes=used[c])
                       for c in hcfg.cards],
                models=[LoadedModel(model=m, bytes=sum(pc.values()), cards=list(pc), card_bytes=list(pc.values()),
                                    keep_alive=ka)  # type: ignore[arg-type]
                        for m, (pc, ka) in held.items()],
                heartbeat_at=NOW,
            )  # fmt: skip
        return out

    def apply(self, plan: Plan) -> None:
        """Carry out the steps in order; after each one every card must be within its memory."""
        for step in plan.steps:
            held = self.models.setdefault(step.host, {})
            if step.action == "unload":
                del held[step.model]
            elif step.action == "keep_alive":
                held[step.model] = (held[step.model][0], step.keep_alive or "warm")
            else:
                assert step.model not in held
                held[step.model] = (dict(zip(step.cards, step.per_card, strict=True)), step.keep_alive or "hot")
            for state in self.states().values():
                for card in state.cards:
                    assert card.used_bytes <= card.total_bytes, f"{card.card} over budget after {step}"

    def loaded(self) -> set[str]:
        return {m for held in self.models.values() for m in held}


def converge(lab: Lab, phase_name: str, rotation: dict[str, list[str]], released: set[str] = frozenset()) -> Plan:  # type: ignore[assignment]
    phase = lab.cfg.phases[phase_name]
    wants = phases.wants(lab.cfg, phase, rotation)
    result = planner.plan(lab.cfg, lab.states(), wants, phases.tiers(lab.cfg, phase, rotation), now=NOW,
                          released=released)  # fmt: skip
    assert isinstance(result, Plan), str(result)
    lab.apply(result)
    assert {w.model for w in wants} <= lab.loaded()
    return result


@pytest.mark.parametrize("phase_name", list(LAB.phases))
def test_every_lab_phase_fits_its_cards_from_empty_hosts(phase_name: str) -> None:
    """Each of the paper's four phases, with its first rotation picks, loads on the lab's cards."""
    lab = Lab(LAB)
    picks = choose(LAB.phases[phase_name], FAMILIES, [], LAB.rotator.recent_window)
    plan = converge(lab, phase_name, picks)
    assert all(s.action == "load" and s.keep_alive == "hot" for s in plan.steps)
    assert plan.placed["llama3.1-70b"] == "m5-p40-a"  # pinned to P40_0 + P40_1 (§3.4)
    seventy = next(s for s in plan.steps if s.model == "llama3.1-70b")
    assert seventy.cards == ("P40_0", "P40_1") and seventy.bytes <= 48 * GB


def test_lab_phases_and_rotations_in_sequence_stay_within_every_card() -> None:
    """Phase 1 with three rotations, then 2, 3 and 4 and back to 1: every step of every plan keeps every
    card within budget, and the phase's set is loaded after each plan."""
    lab = Lab(LAB)
    history: list[list[str]] = []
    wanted_before: set[str] = set()
    rotations = {"phase_1_subject_expertise": 3, "phase_2_context_engineering": 3,
                 "phase_3_interactive_feedback": 4, "phase_4_production": 1}  # fmt: skip
    for phase_name in [*rotations, "phase_1_subject_expertise"]:
        phase = LAB.phases[phase_name]
        for _ in range(rotations[phase_name]):
            picks = choose(phase, FAMILIES, history, LAB.rotator.recent_window)
            if picks:
                history.append([m for p in picks.values() for m in p])
            wanted = set(phases.wanted_names(phase, picks))
            converge(lab, phase_name, picks, wanted_before - wanted)
            wanted_before = wanted
    picked = {m for h in history for m in h}
    assert {"qwen2.5-coder-14b", "starcoder2-15b", "yi-coder-9b"} <= picked  # phase 1 walked its pool


def test_phase_1_rotation_unloads_the_previous_pick_to_make_room() -> None:
    """On the full lab (phase 1), the next rotation pick needs the P4 pair: the previous pick goes first."""
    lab = Lab(LAB)
    phase = LAB.phases["phase_1_subject_expertise"]
    converge(lab, "phase_1_subject_expertise", {"primary": ["qwen2.5-coder-14b"]})
    plan = converge(lab, "phase_1_subject_expertise", {"primary": ["starcoder2-15b"]}, {"qwen2.5-coder-14b"})
    irina = plan.by_host()["irina-p4"]
    assert [(s.action, s.model) for s in irina] == [("keep_alive", "qwen2.5-coder-14b")] or [
        (s.action, s.model) for s in irina
    ] == [("unload", "qwen2.5-coder-14b"), ("load", "starcoder2-15b")]
    assert phases.tier_of("qwen2.5-coder-14b", LAB, phase, {"primary": ["starcoder2-15b"]}) == "warm"
    assert [(s.action, s.model, s.why) for s in irina] == [
        ("unload", "qwen2.5-coder-14b", "room for starcoder2-15b"), ("load", "starcoder2-15b", "primary rotation"),
    ]  # fmt: skip


def test_a_model_that_fits_nowhere_is_refused_with_the_card_and_sizes() -> None:
    """kimi-k2-32b is stored at 48 GB (8 bits, no smaller file): no P40 pair can hold it with a KV cache."""
    result = planner.plan(LAB, Lab(LAB).states(), [Want("kimi-k2-32b")], {}, now=NOW)
    assert isinstance(result, Refusal) and result.model == "kimi-k2-32b"
    assert result.total == 48 * GB and result.card.startswith("P40_") and result.requested > 48 * GB
    assert "does not fit on any host" in result.reason and "free of 48 GB on P40_" in result.reason


def test_the_papers_48_gb_70b_is_refused_and_the_real_file_fits() -> None:
    """With the paper's 48 GB for the 4-bit 70B the planner refuses (no room for any KV cache on 2x 24 GB);
    the library keeps the real Q4_K_M file (42.5 GB), which fits with one 8k-token sequence."""
    papers = msgspec_replace_size(LAB, "llama3.1-70b", 48 * GB)
    refused = planner.plan(papers, Lab(papers).states(), [Want("llama3.1-70b")], {}, now=NOW)
    assert isinstance(refused, Refusal) and refused.card == "P40_0+P40_1" and refused.total == 48 * GB
    assert "needs 51.2 GB" in refused.reason
    fits = planner.plan(LAB, Lab(LAB).states(), [Want("llama3.1-70b")], {}, now=NOW)
    assert isinstance(fits, Plan) and fits.steps[0].bytes == pytest.approx(46.3 * GB, rel=0.01)


def msgspec_replace_size(cfg: OrchestraConfig, model: str, size: int) -> OrchestraConfig:
    import msgspec

    from schemas.config.units import ByteSize

    m = cfg.models[model]
    return msgspec.structs.replace(cfg, models={**cfg.models, model: msgspec.structs.replace(m, size=ByteSize(size))})


def test_a_model_released_by_the_phase_is_unloaded_when_cold_and_demoted_when_warm() -> None:
    """Released hot models: tier cold -> unload (the swap); tier warm -> keep it, warm. A hot model the phase
    never held (a host's preload) is demoted, not unloaded."""
    lab = Lab(LAB)
    lab.models["ws-3050"] = {"llama3.2-3b": ({"RTX_3050": 6 * GB}, "hot")}
    lab.models["irina-p4"] = {
        "testing-llama-7b": ({"P4_0": GB}, "hot"),
        "qwen2.5-coder-3b-instruct": ({"P4_1": GB}, "hot"),
    }
    phase = LAB.phases["phase_4_production"]
    tiers = {**phases.tiers(LAB, phase, {}), "testing-llama-7b": "cold"}
    wants = [w for w in phases.wants(LAB, phase, {}) if w.model == "qwen2.5-coder-3b-instruct"]
    result = planner.plan(LAB, lab.states(), wants, tiers, now=NOW, released={"testing-llama-7b"})
    assert isinstance(result, Plan)
    assert [(s.host, s.action, s.model, s.keep_alive) for s in result.steps] == [
        ("irina-p4", "unload", "testing-llama-7b", None),
        ("ws-3050", "keep_alive", "llama3.2-3b", "warm"),
    ]  # qwen2.5-coder-3b-instruct: wanted in phase 4 -> stays hot, no step


def test_wanted_models_already_loaded_stay_and_get_pinned() -> None:
    lab = Lab(LAB)
    lab.models["ws-3050"] = {"deepseek-coder-1.3b-instruct": ({"RTX_3050": 3 * GB}, "warm")}
    result = planner.plan(LAB, lab.states(), [Want("deepseek-coder-1.3b-instruct")], {}, now=NOW)
    assert isinstance(result, Plan) and result.placed == {"deepseek-coder-1.3b-instruct": "ws-3050"}
    assert [(s.action, s.keep_alive) for s in result.steps] == [("keep_alive", "hot")]


def test_models_whose_hosts_are_down_are_deferred() -> None:
    lab = Lab(LAB, down={"m5-p40-a"})
    result = planner.plan(LAB, lab.states(), [Want("llama3.1-70b"), Want("phi-4")], {}, now=NOW)
    assert isinstance(result, Plan) and result.deferred == ("llama3.1-70b",)
    assert [s.model for s in result.steps] == ["phi-4"]
    assert "deferred llama3.1-70b: its hosts are down" in result.describe()


def test_lingering_models_are_unloaded_only_for_room_idle_ones_first() -> None:
    """ws-3050 (8 GB) holds two warm models: loading llama3.2-3b (6 GB + KV) needs room for it; the
    scaler's protected extra goes too only if needed; a busy model goes last."""
    lab = Lab(LAB)
    lab.models["ws-3050"] = {"phi-3-mini": ({"RTX_3050": 3 * GB}, "warm"), "gemma-2b": ({"RTX_3050": 4 * GB}, "warm")}
    states = lab.states()
    ws = states["ws-3050"]
    busy = [m if m.model != "gemma-2b" else LoadedModel(**{**_fields(m), "in_flight": 2}) for m in ws.models]
    states["ws-3050"] = HostState(host=ws.host, cards=ws.cards, models=busy, heartbeat_at=NOW)
    result = planner.plan(LAB, states, [Want("llama3.2-3b")], {}, now=NOW, protected={("ws-3050", "phi-3-mini")})
    assert isinstance(result, Plan)
    assert [(s.action, s.model) for s in result.steps] == [
        ("unload", "phi-3-mini"), ("unload", "gemma-2b"), ("load", "llama3.2-3b"),
    ]  # fmt: skip
    assert isinstance(planner.plan(LAB, lab.states(), [Want("phi-4")], {}, now=NOW), Plan)  # a P40 has room


def _fields(m: LoadedModel) -> dict[str, object]:
    return {f: getattr(m, f) for f in m.__struct_fields__}


def test_steps_read_as_the_event_shows_them() -> None:
    load = Step("cpu0", "load", "gemma3-270m", "hot", 550_000_000, ("cpu0",), "primary rotation", (550_000_000,))
    assert str(load) == "cpu0: load gemma3-270m hot (0.55 GB on cpu0)"
    quant = Step("cpu0", "load", "gemma3-270m", "hot", 550_000_000, ("cpu0",), "x", (550_000_000,), "q4_k_m")
    assert str(quant) == "cpu0: load gemma3-270m hot (q4_k_m, 0.55 GB on cpu0)"
    assert str(Step("cpu0", "unload", "smollm2-135m", why="out of the phase")) == (
        "cpu0: unload smollm2-135m (out of the phase)"
    )
