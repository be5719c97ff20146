"""Premium validation and the review queue as pure functions: the comparator, the shadow request, the
verdict, the measured-quality fold, review decisions, and the quality strategy's switch to measured figures."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from actors.diversity_monitor import quality
from bus import permissions, subjects
from policy import validation
from policy.agreement import agreement
from policy.routing import Plan, Snapshot, plan_request
from schemas.commands import DecideReview
from schemas.config import load_config
from schemas.errors import ErrorInfo
from schemas.events import Escalated, ValidationCompared, ValidationSkipped
from schemas.request import ChatMessage, GenerateRequest, Requirements
from schemas.result import GenerateError, GenerateResult, Provenance, Response
from schemas.state import CardState, HostState, LoadedModel, ProviderState, TierState

LOCAL = load_config("local")
NOW = 1_000_000.0
UP = {
    "cpu0": HostState(
        host="cpu0",
        heartbeat_at=NOW,
        cards=[CardState(card="cpu0", total_bytes=10**10)],
        models=[LoadedModel(model="smollm2-135m"), LoadedModel(model="gemma3-270m")],
    )
}


def with_share(share: float) -> object:
    phases = dict(LOCAL.phases)
    name = LOCAL.rotator.initial_phase
    phases[name] = msgspec.structs.replace(phases[name], validation_share=share)
    return msgspec.structs.replace(LOCAL, phases=phases)


def snap(**kw: object) -> Snapshot:
    return Snapshot(now=NOW, hosts=UP, providers={"openai": ProviderState(provider="openai", available=True)}, **kw)  # type: ignore[arg-type]


def req(rid: str = "r1", **kw: object) -> GenerateRequest:
    return GenerateRequest(id=rid, messages=[ChatMessage(role="user", content="What is 2+2?")], created_at=NOW, **kw)  # type: ignore[arg-type]


def answer(rid: str, text: str, model: str = "smollm2-135m", tier: str = "local") -> GenerateResult:
    return GenerateResult(request_id=rid, text=text, model=model, family="x", tier=tier, target="cpu0")  # type: ignore[arg-type]


# --- the comparator ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        ("4", "The answer is 4.", True),
        ("The capital of France is Paris.", "Paris is the capital of France.", True),
        ("It is not raining", "It isn't raining", True),
        ("4", "5", False),
        ("Paris", "not Paris", False),
        ("Paris", "London", False),
        ("Yes", "No", False),
        ("", "Paris", False),
    ],
)
def test_the_comparator_separates_agreeing_from_contradicting_answers(a: str, b: str, agree: bool) -> None:
    assert (agreement(a, b) >= LOCAL.router.validation.agree_at) is agree


# --- which requests, and the shadow ---------------------------------------------------------------
def test_the_validation_share_is_drawn_by_id_and_served_locally() -> None:
    """A phase with validation_share 1.0 draws every single request (0: none); the plan stays local first."""
    cfg = with_share(1.0)
    assert validation.drawn(req(), cfg, snap())  # type: ignore[arg-type]
    assert not validation.drawn(req(), LOCAL, snap())
    assert not validation.drawn(req(mode="ensemble"), cfg, snap())  # type: ignore[arg-type]
    assert not validation.drawn(req(requirements=Requirements(tiers=["local"])), cfg, snap())  # type: ignore[arg-type]
    off = snap(tiers={"premium": TierState(tier="premium", enabled=False)})
    assert validation.drawn(req(), cfg, off) and validation.unavailable(off) == "premium_disabled"  # type: ignore[arg-type]
    assert validation.unavailable(snap()) is None
    out = plan_request(req(), cfg, snap())  # type: ignore[arg-type]
    assert isinstance(out, Plan) and out.targets[0].tier == "local"
    shares = [validation.drawn(req(f"r{i}"), with_share(0.1), snap()) for i in range(2000)]  # type: ignore[arg-type]
    assert 100 <= sum(shares) <= 300


def test_the_shadow_asks_a_premium_model_under_its_own_id_without_the_cache() -> None:
    plan = validation.shadow_plan(req(), LOCAL, snap())
    assert [t.model for t in plan] == ["gpt-4o"]  # the only premium provider available
    shadow = validation.shadow_request(req(stream=True), plan[0], LOCAL)
    assert shadow.id == "r1-pv" and shadow.model == "gpt-4o" and not shadow.stream
    assert shadow.cache.no_cache and shadow.cache.no_store and shadow.tags["parent"] == "r1"
    keyed = validation.shadow_request(req(client_key="k1", task="t"), plan[0], LOCAL)
    assert keyed.client_key is None and keyed.task is None  # the lab's check, not the task's or the key's
    long_id = "x" * 64
    assert len(validation.shadow_id(long_id)) <= 64 and validation.shadow_id(long_id) != long_id
    assert validation.shadow_plan(req(), LOCAL, Snapshot(now=NOW, hosts=UP)) == []  # no provider up


def test_the_verdict_comes_when_both_answers_are_in() -> None:
    pairs = validation.Pairs(agree_at=0.6)
    pairs.expect("r1", "r1-pv")
    assert pairs.seen("r1-pv", answer("r1-pv", "4", "gpt-4o", "premium")) is None
    ev = pairs.seen("r1", answer("r1", "The answer is 4."))
    assert isinstance(ev, ValidationCompared) and ev.agreed and ev.model == "smollm2-135m"
    assert ev.premium_model == "gpt-4o" and not pairs.by_id
    pairs.expect("r2", "r2-pv")
    pairs.seen("r2", answer("r2", "5"))
    refused = GenerateError(request_id="r2-pv", error=ErrorInfo.of("budget_exceeded", "tier:premium:daily"))
    skipped = pairs.seen("r2-pv", refused)
    assert isinstance(skipped, ValidationSkipped) and skipped.reason == "budget_exceeded"
    assert skipped.model == "smollm2-135m"
    assert pairs.seen("unknown", answer("unknown", "x")) is None


# --- measured quality and the quality strategy ----------------------------------------------------
def test_measured_quality_is_the_mean_of_the_last_window_of_checks() -> None:
    q = None
    for i, passed in enumerate([False, False, True, True, True]):
        q = quality.checked(q, "m", passed, window=4, now=NOW, compared=True, event_seq=i + 1)
    assert q is not None and q.recent == [0.0, 1.0, 1.0, 1.0] and q.measured == 7.5
    assert (q.compared, q.agreed, q.last_seq) == (5, 3, 5)
    q = quality.checked(q, "m", False, window=4, now=NOW, compared=False)
    assert q.rejected == 1 and q.measured == 7.5 and q.last_seq == 5
    q = quality.skipped(q, "m", "budget_exceeded", NOW, 9)
    assert q.skipped == {"budget_exceeded": 1} and q.last_seq == 9


def test_the_quality_strategy_uses_measured_quality_where_it_exists() -> None:
    """Both local models rank 2; SmolLM2 wins the tie until the measured figures say Gemma is better."""
    wants = Requirements(strategy="quality")
    r = GenerateRequest(id="c", prompt="Once upon a time", created_at=NOW, requirements=wants)
    first = plan_request(r, LOCAL, snap())
    assert isinstance(first, Plan) and first.targets[0].model == "smollm2-135m"
    measured = plan_request(r, LOCAL, snap(measured={"smollm2-135m": 1.0, "gemma3-270m": 9.0}))
    assert isinstance(measured, Plan) and measured.targets[0].model == "gemma3-270m"


# --- the review queue ---------------------------------------------------------------------------
def escalation() -> Escalated:
    def resp(i: int, model: str, text: str) -> Response:
        prov = Provenance(model=model, family=model, tier="local", target="cpu0")
        return Response(request_id=f"e1-{i}", text=text, provenance=prov)

    return Escalated(
        request_id="e1",
        consistency=0.5,
        threshold=0.7,
        prompt="What is 2+2?",
        responses=[resp(0, "smollm2-135m", "4"), resp(1, "gemma3-270m", "What is 2+2?")],
        winner=0,
        at=NOW,
    )


def test_accepting_credits_the_chosen_answers_model_and_debits_the_others() -> None:
    item = quality.queued(escalation(), NOW)
    assert item.status == "pending" and item.winner == 0
    out = quality.decide(item, DecideReview(request_id="e1", verdict="accept", by="ada"), NOW)
    assert not isinstance(out, str)
    decided, event = out
    assert decided.status == "accepted" and decided.answer == 0 and decided.decided_by == "ada"
    assert event.credited == ["smollm2-135m"] and event.debited == ["gemma3-270m"]
    again = quality.decide(decided, DecideReview(request_id="e1", verdict="reject"), NOW)
    assert again == "review e1 was accepted already"


def test_rejecting_debits_every_model_unless_the_reviewer_names_another_answer() -> None:
    item = quality.queued(escalation(), NOW)
    out = quality.decide(item, DecideReview(request_id="e1", verdict="reject", text="4, obviously"), NOW)
    assert not isinstance(out, str) and out[1].credited == [] and out[1].debited == ["gemma3-270m", "smollm2-135m"]
    assert out[0].status == "rejected" and out[0].text == "4, obviously"
    named = quality.decide(item, DecideReview(request_id="e1", verdict="reject", answer=1), NOW)
    assert not isinstance(named, str) and named[1].credited == ["gemma3-270m"]
    assert isinstance(quality.decide(item, DecideReview(request_id="e1", verdict="accept", answer=5), NOW), str)


def test_only_the_operator_decides_reviews_and_the_monitor_alone_writes_the_queue() -> None:
    decide = subjects.command(DecideReview(request_id="e1", verdict="accept"))
    assert decide == "orch.cmd.review.decide"
    grants = {r: permissions.grants(r).publish for r in permissions.ACTOR_ROLES}
    assert [r for r, allowed in grants.items() if any(subjects.subject_matches(decide, p) for p in allowed)] == []
    for bucket in (subjects.KV_REVIEWS, subjects.KV_QUALITY):
        owners = [r for r in permissions.ACTOR_ROLES if f"$KV.{bucket}.>" in permissions.grants(r).publish]
        assert owners == ["diversity_monitor"]


def test_the_cli_reads_a_number_as_an_answers_index_and_anything_else_as_a_written_answer() -> None:
    from cli import CliError
    from cli.review import _command

    item = quality.queued(escalation(), NOW)

    def cmd(verb: str, answer: str | None = None, text: str | None = None) -> DecideReview:
        args = argparse.Namespace(review_command=verb, answer=answer, text=text, by="ada")
        return _command(item, args)

    assert (cmd("accept").verdict, cmd("accept").answer) == ("accept", None)  # the monitor takes the winner
    assert (cmd("reject", "1").answer, cmd("reject", "1").text) == (1, None)
    assert (cmd("reject", "Paris").answer, cmd("reject", "Paris").text) == (None, "Paris")
    assert (cmd("reject", text="4").answer, cmd("reject", text="4").text) == (None, "4")
    for verb, answer, text in (("accept", "Paris", None), ("reject", "7", None), ("reject", "1", "4")):
        with pytest.raises(CliError) as refused:
            cmd(verb, answer, text)
        assert "answer" in str(refused.value)
