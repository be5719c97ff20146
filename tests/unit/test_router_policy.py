"""The router's choices as pure functions of plain data: the lab and local profiles."""

from __future__ import annotations

import time

import msgspec
import pytest

from actors.router.families import diverse_targets
from actors.router.fanout import diverse_children, ensemble_children
from policy.classify import classify
from policy.routing import Plan, Snapshot, allowed_tiers, plan_request, target_key
from policy.validation import drawn
from schemas.config import load_config
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo
from schemas.request import ChatMessage, GenerateRequest, Requirements
from schemas.state import CardState, HostState, LoadedModel, PhaseState, ProviderState, TierState

LAB = load_config("lab")
LOCAL = load_config("local")
NOW = 1_000_000.0


def req(text: str = "hello", **kw: object) -> GenerateRequest:
    fields: dict[str, object] = {"id": "r1", "messages": [ChatMessage(role="user", content=text)], "created_at": NOW}
    fields.update(kw)
    return GenerateRequest(**fields)  # type: ignore[arg-type]


def host(name: str, *models: str, up: bool = True, beat: float = NOW, depth: int = 0) -> HostState:
    return HostState(
        host=name,
        up=up,
        heartbeat_at=beat,
        cards=[CardState(card=name, total_bytes=10**10)],
        models=[LoadedModel(model=m, queue_depth=depth) for m in models],
    )


def snap(cfg: OrchestraConfig, hosts: dict[str, HostState], providers: tuple[str, ...] = (), **kw: object) -> Snapshot:
    return Snapshot(
        now=NOW,
        hosts=hosts,
        providers={p: ProviderState(provider=p, available=True) for p in providers},
        **kw,  # type: ignore[arg-type]
    )


def plan(request: GenerateRequest, cfg: OrchestraConfig, s: Snapshot) -> Plan:
    out = plan_request(request, cfg, s)
    assert isinstance(out, Plan), out
    return out


def models(p: Plan) -> list[str]:
    return [t.model for t in p.targets]


LOCAL_UP = {"cpu0": host("cpu0", "smollm2-135m", "gemma3-270m")}


def test_cost_ladder_puts_loaded_local_models_before_cloud() -> None:
    """Local first (loaded), then Together; premium is not in phase 1's policy."""
    p = plan(req(), LOCAL, snap(LOCAL, LOCAL_UP, ("together", "openai")))
    assert p.targets[0].tier == "local"
    assert [t.tier for t in p.targets] == sorted((t.tier for t in p.targets), key=["local", "together"].index)
    assert "gpt-4o" not in models(p)


def test_chat_requests_prefer_chat_models_over_base_models() -> None:
    """Gemma 3 270M is a base model: a chat goes to SmolLM2 first, Gemma stays a fallback."""
    p = plan(req(), LOCAL, snap(LOCAL, LOCAL_UP))
    assert models(p) == ["smollm2-135m", "gemma3-270m"]
    completion = plan(GenerateRequest(id="c", prompt="Once upon a time", created_at=NOW), LOCAL, snap(LOCAL, LOCAL_UP))
    assert set(models(completion)) == {"smollm2-135m", "gemma3-270m"}


def test_a_named_model_goes_to_a_host_that_has_it() -> None:
    p = plan(req(model="gemma3-270m"), LOCAL, snap(LOCAL, LOCAL_UP))
    assert models(p) == ["gemma3-270m"]
    assert p.targets[0].host == "cpu0"


def test_unknown_model_is_not_found_naming_the_field() -> None:
    out = plan_request(req(model="gpt-7"), LOCAL, snap(LOCAL, LOCAL_UP))
    assert isinstance(out, ErrorInfo) and out.code == "not_found" and out.field == "model"


def test_a_stale_host_is_not_used() -> None:
    """A host whose heartbeat is older than 3 heartbeats is down: nothing local can serve."""
    stale = {"cpu0": host("cpu0", "smollm2-135m", beat=NOW - 60)}
    out = plan_request(req(model="smollm2-135m"), LOCAL, snap(LOCAL, stale))
    assert isinstance(out, ErrorInfo) and out.code == "unavailable"
    auto = plan_request(req(), LOCAL, snap(LOCAL, stale))
    assert isinstance(auto, ErrorInfo) and "gpu_hosts up: none" in auto.message


def test_cloud_providers_count_only_when_the_cloud_proxy_says_so() -> None:
    """A provider with no state (no cloud_proxy running) or in cooldown is skipped."""
    none = plan_request(req(model="together/llama3.1-70b"), LOCAL, snap(LOCAL, LOCAL_UP))
    assert isinstance(none, ErrorInfo) and none.code == "unavailable"
    s = snap(LOCAL, LOCAL_UP, ("together",))
    s.providers["together"] = ProviderState(provider="together", available=True, cooldown_until=NOW + 30)
    cooling = plan_request(req(model="together/llama3.1-70b"), LOCAL, s)
    assert isinstance(cooling, ErrorInfo)
    s.providers["together"] = ProviderState(
        provider="together", available=True, cooling={"together/llama3.1-70b": NOW + 5}
    )
    open_circuit = plan_request(req(model="together/llama3.1-70b"), LOCAL, s)
    assert isinstance(open_circuit, ErrorInfo) and open_circuit.code == "unavailable"


def test_a_disabled_tier_is_never_used_until_it_is_re_enabled() -> None:
    """The budget_guard's tier switch: premium disabled -> a premium model is refused; the
    'until' time passing re-enables it."""
    s = snap(LOCAL, LOCAL_UP, ("openai",), tiers={"premium": TierState(tier="premium", enabled=False, until=NOW + 60)})
    out = plan_request(req(model="gpt-4o"), LOCAL, s)
    assert isinstance(out, ErrorInfo) and "disabled" in out.message
    s.tiers["premium"] = TierState(tier="premium", enabled=False, until=NOW - 1)
    assert models(plan(req(model="gpt-4o"), LOCAL, s)) == ["gpt-4o"]
    validation = req(requirements=Requirements(tiers=["premium"]))
    s.tiers["premium"] = TierState(tier="premium", enabled=False)
    assert isinstance(plan_request(validation, LOCAL, s), ErrorInfo)


def test_phase_policies_set_the_tiers() -> None:
    """Phase 3 mixes every tier; phase 1 keeps premium for its validation share only."""
    base = snap(LOCAL, LOCAL_UP)
    assert allowed_tiers(req(), LOCAL, base) == ("local", "together")
    base.phase = "phase_3_interactive_feedback"
    assert allowed_tiers(req(), LOCAL, base) == ("local", "together", "premium")
    lab = snap(LAB, {})
    assert all(allowed_tiers(req(id=f"r{i}"), LAB, lab)[0] == "local" for i in range(200))
    sampled = [i for i in range(2000) if drawn(req(id=f"r{i}"), LAB, lab)]  # served locally, shadowed by premium
    assert 5 <= len(sampled) <= 40  # validation_share 0.01 of 2000 requests, deterministic by id


def test_quality_strategy_picks_the_best_model_in_the_allowed_tiers() -> None:
    s = snap(LAB, {"m5-p40-a": host("m5-p40-a", "llama3.1-70b"), "irina-p4": host("irina-p4", "codellama-7b")})
    p = plan(req(requirements=Requirements(strategy="quality")), LAB, s)
    assert p.targets[0].model == "llama3.1-70b"


def test_speed_strategy_uses_measured_latency() -> None:
    s = snap(LOCAL, LOCAL_UP)
    fast = target_key(plan(req(model="gemma3-270m"), LOCAL, s).targets[0])
    s.latency_ms = {fast: 50.0}
    p = plan(GenerateRequest(id="c", prompt="x", created_at=NOW, requirements=Requirements(strategy="speed")), LOCAL, s)
    assert p.targets[0].model == "gemma3-270m"


def test_least_loaded_and_round_robin_spread_the_work() -> None:
    hosts = {"cpu0": host("cpu0", "smollm2-135m", "gemma3-270m")}
    s = snap(LOCAL, hosts)
    s.inflight = {"local:cpu0:smollm2-135m": 9}
    prompt = GenerateRequest(id="c", prompt="x", created_at=NOW, requirements=Requirements(strategy="least_loaded"))
    assert plan(prompt, LOCAL, s).targets[0].model == "gemma3-270m"
    rr = msgspec.structs.replace(prompt, requirements=Requirements(strategy="round_robin"))
    firsts = set()
    for turn in range(4):
        s.turn = turn
        firsts.add(plan(rr, LOCAL, s).targets[0].model)
    assert firsts == {"smollm2-135m", "gemma3-270m"}


def test_specialisation_routes_code_to_code_models() -> None:
    s = snap(
        LAB,
        {
            "m5-p40-b": host("m5-p40-b", "qwen2.5-coder-14b"),
            "ws-3050": host("ws-3050", "llama3.2-3b"),
            "m5-p40-c": host("m5-p40-c", "mistral-7b"),
        },
    )
    code = req("Write a python function that merges two sorted lists")
    assert classify(code) == "code-generation"
    p = plan(code, LAB, s)
    assert p.route == "code_generation" and p.targets[0].model == "qwen2.5-coder-14b"


def test_a_declarative_route_gives_primary_then_fallbacks() -> None:
    s = snap(LOCAL, LOCAL_UP, ("together",))
    p = plan(req(requirements=Requirements(route="chat")), LOCAL, s)
    assert models(p) == ["smollm2-135m", "gemma3-270m", "together/llama3.1-70b"]
    missing = plan_request(req(requirements=Requirements(route="nope")), LOCAL, s)
    assert isinstance(missing, ErrorInfo) and missing.field == "requirements.route"


def test_backlogged_targets_go_last() -> None:
    s = snap(LOCAL, LOCAL_UP)
    s.backlog = {"local:cpu0:smollm2-135m"}
    assert models(plan(req(), LOCAL, s))[0] == "gemma3-270m"


def test_overflow_sends_local_work_to_the_named_cloud_tier() -> None:
    s = snap(LOCAL, LOCAL_UP, ("together",), overflow={"*": "together"})
    assert plan(req(), LOCAL, s).targets[0].tier == "together"


def test_context_too_long_is_a_typed_error_naming_the_field() -> None:
    long = req("word " * 3000, model="smollm2-135m")
    out = plan_request(long, LOCAL, snap(LOCAL, LOCAL_UP))
    assert isinstance(out, ErrorInfo) and out.code == "context_too_long" and out.field == "messages"


def test_a_prompt_no_reachable_model_can_hold_is_a_400_not_a_503() -> None:
    """23,900 digits to `auto` on the embedded default (no cloud keys): the local models' 2k context cannot
    hold it and every provider reports itself switched off, so nothing will ever serve it here: a typed
    context_too_long (the client's error), not "unavailable" (which invites a retry). A provider that is
    only cooling down, or not reported yet, may still serve it: that stays a 503."""
    digits = req("7" * 23_900)
    off = Snapshot(
        now=NOW,
        hosts=LOCAL_UP,
        providers={p: ProviderState(provider=p, available=False) for p in LOCAL.providers},
    )
    out = plan_request(digits, LOCAL, off)
    assert isinstance(out, ErrorInfo) and out.code == "context_too_long", out
    cooling = Snapshot(
        now=NOW,
        hosts=LOCAL_UP,
        providers={p: ProviderState(provider=p, available=True, cooldown_until=NOW + 60) for p in LOCAL.providers},
    )
    waiting = plan_request(digits, LOCAL, cooling)
    assert isinstance(waiting, ErrorInfo) and waiting.code == "unavailable", waiting
    unknown = plan_request(digits, LOCAL, snap(LOCAL, LOCAL_UP))
    assert isinstance(unknown, ErrorInfo) and unknown.code == "unavailable", unknown


def test_max_cost_and_min_quality_filter_candidates() -> None:
    s = snap(LOCAL, LOCAL_UP, ("together", "openai"))
    cheap = plan(req(requirements=Requirements(max_cost_usd=0.0001, tiers=["local", "together"])), LOCAL, s)
    assert all(t.tier == "local" for t in cheap.targets)
    good = plan_request(req(requirements=Requirements(min_quality=7, tiers=["together"])), LOCAL, s)
    assert isinstance(good, Plan) and models(good) == ["together/llama3.1-70b"]


@pytest.mark.parametrize(
    ("text", "capability"),
    [
        ("Write pytest unit tests for this parser", "test-generation"),
        ("Implement a function that reverses a linked list in Rust", "code-generation"),
        ("Why does ice float? Explain step by step", "reasoning"),
        ("What is 17 * 23?", "math"),
        ("Write a haiku about autumn", "creative"),
        ("hi there", "conversational"),
    ],
)
def test_requests_are_classified_by_capability(text: str, capability: str) -> None:
    assert classify(req(text)) == capability


def test_long_prompts_are_long_context() -> None:
    assert classify(req("x" * 40_000)) == "long-context"


def test_diverse_fans_out_over_families_then_sampling_and_prompt_variants() -> None:
    children = diverse_children(req("sort a list", mode="diverse"), LOCAL, snap(LOCAL, LOCAL_UP))
    assert not isinstance(children, ErrorInfo)
    assert len(children) == 4
    assert {c.plan[0].family for c in children[:2]} == {"smollm", "gemma"}
    assert len({c.request.sampling.temperature for c in children}) == 3
    assert [c.prompt_variant for c in children] == ["direct", "plan-first", "test-first", "example-driven"]
    assert children[1].request.messages[-1].content.startswith("First outline a short plan")  # type: ignore[index]
    assert all(c.request.id.startswith("r1-") and c.request.cache.no_store for c in children)


def test_ensemble_uses_distinct_models_and_needs_two() -> None:
    children = ensemble_children(req(mode="ensemble"), LOCAL, snap(LOCAL, LOCAL_UP))
    assert not isinstance(children, ErrorInfo)
    assert sorted(c.plan[0].model for c in children) == ["gemma3-270m", "smollm2-135m"]
    one = {"cpu0": host("cpu0", "smollm2-135m")}
    local_only = msgspec.structs.replace(LOCAL, models={k: v for k, v in LOCAL.models.items() if k == "smollm2-135m"})
    out = ensemble_children(req(mode="ensemble"), local_only, snap(local_only, one))
    assert isinstance(out, ErrorInfo) and "two models" in out.message


def test_local_ensemble_members_are_asked_for_logprobs() -> None:
    """Their token logprobs become each answer's confidence (the client's own sampling is otherwise kept)."""
    children = ensemble_children(req(mode="ensemble"), LOCAL, snap(LOCAL, LOCAL_UP))
    assert not isinstance(children, ErrorInfo)
    assert all(c.request.sampling.logprobs for c in children)


def test_phase_state_comes_from_the_snapshot() -> None:
    s = snap(LOCAL, LOCAL_UP)
    s.phase = PhaseState(phase="phase_3_interactive_feedback").phase
    assert allowed_tiers(req(), LOCAL, s)[-1] == "premium"
    assert time.time() > 0


def test_diverse_code_task_keeps_both_families_while_one_is_unloaded() -> None:
    """Specialisation and loading state rank a code fan-out; they never reduce it to one family."""
    one_loaded = {"cpu0": host("cpu0", "smollm2-135m")}  # Gemma cold (phase 1: warm, not yet used)
    code = req("Write a Python function to reverse a string", mode="diverse")
    assert classify(code) == "code-generation"
    targets = diverse_targets(code, LOCAL, snap(LOCAL, one_loaded))
    assert not isinstance(targets, ErrorInfo)
    assert [t.family for t in targets] == ["smollm", "gemma"]  # loaded first, then the cold family
    children = diverse_children(code, LOCAL, snap(LOCAL, one_loaded))
    assert not isinstance(children, ErrorInfo)
    assert [c.plan[0].family for c in children] == ["smollm", "gemma", "smollm", "gemma"]
    # auto-routing still does not cold-load while a loaded model can answer
    assert models(plan(req("Write a Python function to reverse a string"), LOCAL, snap(LOCAL, one_loaded))) == [
        "smollm2-135m"
    ]


def test_diverse_ranks_the_specialised_model_first_without_dropping_the_other_family() -> None:
    """A model specialised for the capability leads the fan-out; the other family still takes part."""
    special = msgspec.structs.replace(LOCAL.models["gemma3-270m"], specialisations=["code-generation"])
    cfg = msgspec.structs.replace(LOCAL, models={**LOCAL.models, "gemma3-270m": special})
    targets = diverse_targets(req("implement a binary search", mode="diverse"), cfg, snap(cfg, LOCAL_UP))
    assert not isinstance(targets, ErrorInfo)
    assert [t.model for t in targets] == ["gemma3-270m", "smollm2-135m"]


def test_diverse_is_one_family_only_when_no_other_can_answer() -> None:
    """A family whose host is down, or that the key may not use, does not take part."""
    code = req("Write a Python function to reverse a string", mode="diverse")
    down = {"cpu0": host("cpu0", "smollm2-135m", "gemma3-270m", beat=NOW - 600)}
    assert isinstance(diverse_targets(code, LOCAL, snap(LOCAL, down)), ErrorInfo)
    only_smollm = msgspec.structs.replace(LOCAL, models={k: v for k, v in LOCAL.models.items() if k != "gemma3-270m"})
    targets = diverse_targets(code, only_smollm, snap(only_smollm, LOCAL_UP))
    assert not isinstance(targets, ErrorInfo)
    assert {t.family for t in targets} == {"smollm"}
