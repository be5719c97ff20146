"""Per-key policy as pure functions: the allow-list on the model the router actually picks (auto, family,
route, diverse, ensemble, cache hits), fan-out and deadline limits, and the shared rate counters."""

from __future__ import annotations

import msgspec
import pytest

from actors.router.fanout import diverse_children, ensemble_children
from policy import keys as kp
from policy.routing import Plan, plan_request
from schemas.config import load_config
from schemas.config.actors import ApiKeyCfg, KeyLimits
from schemas.config.providers import SecretRef
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo
from schemas.request import ChatMessage, GenerateRequest, Requirements
from tests.unit.test_router_policy import NOW, host, snap

BASE = load_config("local")
GEMMA_ONLY = ApiKeyCfg(id="restricted", secret=SecretRef(env="X"), models=["gemma3-270m"])
LIMITED = ApiKeyCfg(
    id="limited",
    secret=SecretRef(env="Y"),
    limits=KeyLimits(max_fanout=2, max_timeout=30.0),  # type: ignore[arg-type]
)
CFG: OrchestraConfig = msgspec.structs.replace(
    BASE, gateway=msgspec.structs.replace(BASE.gateway, api_keys=[GEMMA_ONLY, LIMITED])
)
UP = snap(CFG, {"cpu0": host("cpu0", "smollm2-135m", "gemma3-270m")}, ("together",))


def req(key: str | None = "restricted", text: str = "hello", **kw: object) -> GenerateRequest:
    fields: dict[str, object] = {
        "id": "r1",
        "messages": [ChatMessage(role="user", content=text)],
        "created_at": NOW,
        "client_key": key,
    }
    fields.update(kw)
    return GenerateRequest(**fields)  # type: ignore[arg-type]


def test_auto_only_picks_models_the_key_may_use() -> None:
    """SmolLM2 is the chat favourite, but this key may use Gemma only."""
    p = plan_request(req(), CFG, UP)
    assert isinstance(p, Plan) and {t.model for t in p.targets} == {"gemma3-270m"}
    free = plan_request(req(key="someone-else"), CFG, UP)
    assert isinstance(free, Plan) and free.targets[0].model == "smollm2-135m"


def test_a_family_outside_the_allow_list_is_refused_not_served() -> None:
    """auto + family smollm with a Gemma-only key: a 403, never SmolLM2."""
    out = plan_request(req(requirements=Requirements(family="smollm")), CFG, UP)
    assert isinstance(out, ErrorInfo) and out.code == "forbidden"


def test_a_named_model_outside_the_allow_list_is_forbidden() -> None:
    out = plan_request(req(model="smollm2-135m"), CFG, UP)
    assert isinstance(out, ErrorInfo) and out.code == "forbidden" and out.field == "model"


def test_routes_skip_models_the_key_may_not_use() -> None:
    """A code request follows its route; the route's SmolLM2/Together steps are skipped for this key."""
    out = plan_request(req(text="write a python function that sorts a list"), CFG, UP)
    assert isinstance(out, Plan) and {t.model for t in out.targets} <= {"gemma3-270m"}


@pytest.mark.parametrize("mode", ["diverse", "ensemble"])
def test_fan_outs_use_only_allowed_models(mode: str) -> None:
    """diverse and ensemble children never land on a model outside the allow-list."""
    request = req(mode=mode, model=mode, requirements=Requirements(fanout=4))
    children = diverse_children(request, CFG, UP) if mode == "diverse" else ensemble_children(request, CFG, UP)
    models = set() if isinstance(children, ErrorInfo) else {t.model for c in children for t in c.plan}
    assert models <= {"gemma3-270m"}
    if mode == "diverse":
        assert models == {"gemma3-270m"}
    else:  # an ensemble needs two models: refused rather than served by another
        assert isinstance(children, ErrorInfo)


def test_fanout_and_deadline_limits() -> None:
    policy = kp.policy_for(CFG, "limited")
    wide = req(key="limited", mode="diverse", model="diverse", requirements=Requirements(fanout=3))
    err = kp.shape_error(policy, wide, CFG)
    assert err is not None and err.code == "forbidden" and err.field == "n"
    default = req(key="limited", mode="diverse", model="diverse")  # diverse.fanout defaults to 4 > 2
    assert kp.shape_error(policy, default, CFG) is not None
    long = req(key="limited", deadline=NOW + 3600)
    err = kp.shape_error(policy, long, CFG)
    assert err is not None and err.field == "orchestra.timeout_s"
    assert kp.shape_error(policy, req(key="limited", deadline=NOW + 30), CFG) is None
    assert kp.shape_error(kp.policy_for(CFG, "nobody"), long, CFG) is None


def test_rpm_counts_every_instance_and_resets_each_minute() -> None:
    limits = KeyLimits(rpm=2)
    u, err = kp.admit(None, limits, now=60.0, instance="g1", tokens=10)
    u, err = kp.admit(u, limits, now=61.0, instance="g2", tokens=10)
    assert err is None and u.requests == 2 and u.inflight == {"g1": 1, "g2": 1}
    _, err = kp.admit(u, limits, now=62.0, instance="g1", tokens=10)
    assert err is not None and err.code == "rate_limited" and err.retry_after_s == pytest.approx(58.0)
    _, err = kp.admit(u, limits, now=121.0, instance="g1", tokens=10)
    assert err is None


def test_concurrency_counts_requests_in_flight_until_released() -> None:
    limits = KeyLimits(concurrent=1)
    u, _ = kp.admit(None, limits, now=0.0, instance="g1", tokens=1)
    _, err = kp.admit(u, limits, now=1.0, instance="g2", tokens=1)
    assert err is not None and "in flight" in err.message
    u = kp.release(u, now=2.0, instance="g1", estimated=1, used=1)
    _, err = kp.admit(u, limits, now=3.0, instance="g2", tokens=1)
    assert err is None


def test_only_a_per_minute_refusal_is_held_until_the_minute_ends() -> None:
    """A key over its requests per minute stays over until the minute ends (the gateway repeats the 429
    without reading bodies); a key busy with requests in flight may be freed by any release."""
    rated = KeyLimits(rpm=1, concurrent=5)
    u, _ = kp.admit(None, rated, now=60.0, instance="g1", tokens=1)
    assert kp.at_rate_limit(u, rated, now=61.0)
    busy = KeyLimits(concurrent=1)
    u, _ = kp.admit(None, busy, now=60.0, instance="g1", tokens=1)
    assert not kp.at_rate_limit(u, busy, now=61.0)


def test_a_silent_gateway_instance_stops_counting() -> None:
    """A gateway that died with requests in flight does not block the key for ever."""
    limits = KeyLimits(concurrent=1)
    u, _ = kp.admit(None, limits, now=0.0, instance="dead", tokens=1)
    _, err = kp.admit(u, limits, now=kp.STALE_S + 1, instance="g2", tokens=1)
    assert err is None


def test_tokens_per_minute_are_settled_on_what_was_used() -> None:
    limits = KeyLimits(tokens_per_min=100)
    u, err = kp.admit(None, limits, now=0.0, instance="g", tokens=80)
    assert err is None
    _, err = kp.admit(u, limits, now=1.0, instance="g", tokens=30)
    assert err is not None
    u = kp.release(u, now=2.0, instance="g", estimated=80, used=20)
    assert u.tokens == 20
    u, err = kp.admit(u, limits, now=3.0, instance="g", tokens=30)
    assert err is None and u.tokens == 50
    _, err = kp.admit(None, limits, now=4.0, instance="g", tokens=500)
    assert err is not None and err.retry_after_s is None  # never fits: waiting does not help


def test_n_answers_are_held_n_times_in_the_budget() -> None:
    """The worst case of n answers is n times the output: a max_cost_usd that one answer fits, three do not."""
    from policy.pricing import max_input_tokens, worst_case_cost
    from schemas.request import Sampling

    model = CFG.models["together/llama3.1-70b"]
    one = req(key=None, sampling=Sampling(max_tokens=1000, temperature=0))
    cost_one = worst_case_cost(model, max_input_tokens(one), 1000, CFG.budgets.local_cost)
    three = req(key=None, sampling=Sampling(max_tokens=1000, temperature=0, n=3))
    budget = Requirements(max_cost_usd=cost_one * 1.5, tiers=["together"])
    assert isinstance(plan_request(msgspec.structs.replace(one, requirements=budget), CFG, UP), Plan)
    refused = plan_request(msgspec.structs.replace(three, requirements=budget), CFG, UP)
    assert isinstance(refused, ErrorInfo)
