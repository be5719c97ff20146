"""The router against a real nats-server, with a scripted worker deciding each target's answer:
routing, fallback, timeouts, exactly one outcome, typed errors, fan-out, tier switches, backlog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from actors.router.actor import Router
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from schemas.codec import DISPATCH, Codec, encode
from schemas.config import OrchestraConfig, load_config
from schemas.events import Escalated, QueueBacklog, RequestFallback
from schemas.request import ChatMessage, GenerateRequest, Requirements, make_request
from schemas.result import GenerateError, GenerateResult
from schemas.state import QueueState, TierState
from tests.support.actors import Actors
from tests.support.client import ask, ask_streaming, outcomes_stored
from tests.support.events import Recorder
from tests.support.profile import test_config
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

FAST_ROUTER = {"router": {"attempt_timeout": "2s", "max_attempts": 3}}
Start = Callable[..., Awaitable[ScriptedWorker]]


@pytest.fixture
def rcfg(tmp_path: Path, nats_server: EmbeddedNats) -> OrchestraConfig:
    return test_config(tmp_path / "profile", nats_server.url, overrides=FAST_ROUTER)


@pytest.fixture
def orchestra(rcfg: OrchestraConfig, actors: Actors) -> Start:
    """Start a scripted worker and a router in-process (stopped by ``actors``)."""

    async def start(**worker: object) -> ScriptedWorker:
        w = await actors.start(ScriptedWorker(rcfg, **worker))  # type: ignore[arg-type]
        router = await actors.start(Router(rcfg, instance="test-router"))
        await eventually(lambda: router.view.hosts.data or not worker.get("hosts"))
        return w

    return start


def chat(text: str = "hello", timeout_s: float = 20, **kw: object) -> GenerateRequest:
    return make_request(messages=[ChatMessage(role="user", content=text)], timeout_s=timeout_s, **kw)


LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}


async def test_a_request_is_routed_and_answered_once(orchestra: Start, nc: NATS) -> None:
    """The cheapest loaded chat model answers; one outcome is stored; the stored dispatch says why."""
    worker = await orchestra(hosts=LOCAL)
    request = chat()
    outcome = await ask(nc, request)
    assert isinstance(outcome, GenerateResult)
    assert outcome.model == "smollm2-135m" and outcome.target == "cpu0"
    assert await outcomes_stored(nc, request.id) == 1
    assert [s.model for s in worker.seen] == ["smollm2-135m"]
    stored = await nc.jetstream().get_last_msg("DISPATCH", subjects.dispatch_host("cpu0", "smollm2-135m"))
    dispatch = DISPATCH.decode(stored.data or b"")
    assert dispatch.request.id == request.id and dispatch.attempt == 0
    assert dispatch.route == "chat" and dispatch.strategy


async def test_a_failed_attempt_falls_back_to_the_next_candidate(orchestra: Start, nc: NATS) -> None:
    """An OOM on the first model moves the request to the next one; the client sees one answer."""
    bus = await Recorder.listen(nc, "request.fallback")
    worker = await orchestra(hosts=LOCAL, script={"cpu0/smollm2-135m": ["fail:oom"]})
    request = chat()
    outcome = await ask(nc, request)
    assert isinstance(outcome, GenerateResult) and outcome.model == "gemma3-270m"
    assert [(s.model, s.attempt) for s in worker.seen] == [("smollm2-135m", 0), ("gemma3-270m", 1)]
    fallback = (await eventually(lambda: bus.of(RequestFallback)))[0]
    assert isinstance(fallback, RequestFallback) and fallback.error.code == "oom"
    await asyncio.sleep(0.3)
    assert await outcomes_stored(nc, request.id) == 1


async def test_an_error_that_another_target_cannot_fix_goes_back_to_the_client(orchestra: Start, nc: NATS) -> None:
    worker = await orchestra(hosts=LOCAL, script={"*": ["fail:content_policy"]})
    outcome = await ask(nc, chat())
    assert isinstance(outcome, GenerateError) and outcome.error.code == "content_policy"
    assert len(worker.seen) == 1


async def test_a_target_that_hangs_times_out_and_the_next_one_answers(orchestra: Start, nc: NATS) -> None:
    """attempt_timeout (2 s here) moves on; the hung worker's late answer cannot make a second outcome."""
    worker = await orchestra(hosts=LOCAL, script={"cpu0/smollm2-135m": ["hang"]})
    request = chat()
    outcome = await ask(nc, request)
    assert isinstance(outcome, GenerateResult) and outcome.model == "gemma3-270m"
    assert [s.attempt for s in worker.seen] == [0, 1]
    assert await outcomes_stored(nc, request.id) == 1


async def test_when_every_candidate_fails_the_last_error_is_returned(orchestra: Start, nc: NATS) -> None:
    worker = await orchestra(hosts=LOCAL, script={"*": ["fail:oom"]})
    outcome = await ask(nc, chat())
    assert isinstance(outcome, GenerateError) and outcome.error.code == "oom"
    assert len(worker.seen) == 2  # both local models; no cloud provider is up


async def test_a_request_past_its_deadline_gets_a_timeout(orchestra: Start, nc: NATS) -> None:
    await orchestra(hosts=LOCAL, script={"*": ["hang"]})
    request = make_request(messages=[ChatMessage(role="user", content="x")], timeout_s=1.0)
    outcome = await ask(nc, request)
    assert isinstance(outcome, GenerateError) and outcome.error.code == "timeout"


async def test_malformed_and_invalid_requests_get_typed_errors(orchestra: Start, nc: NATS) -> None:
    """Undecodable bytes and an unknown model never kill the router: each gets a typed error."""
    await orchestra(hosts=LOCAL)
    sub = await nc.subscribe(subjects.result("badreq1"))
    await nc.jetstream().publish(
        subjects.request("normal", "badreq1"), b'{"id":"badreq1","prompt":"x","sampling":{"max_tokens":-3}}'
    )
    bad = Codec(GenerateError).decode((await sub.next_msg(timeout=10)).data)
    assert bad.error.code == "bad_request" and bad.error.field == "sampling.max_tokens"
    unknown = await ask(nc, chat(model="gpt-7"))
    assert isinstance(unknown, GenerateError) and unknown.error.code == "not_found"
    assert isinstance(await ask(nc, chat()), GenerateResult)


async def test_streamed_chunks_reach_the_client_before_the_result(orchestra: Start, nc: NATS) -> None:
    await orchestra(hosts=LOCAL, script={"*": ["stream"]}, answers={"smollm2-135m": "one two three"})
    chunks, outcome = await ask_streaming(nc, chat(stream=True))
    assert "".join(c.text for c in chunks).split() == ["one", "two", "three"]
    assert chunks[-1].done and isinstance(outcome, GenerateResult)


async def test_diverse_returns_answers_from_both_families_with_provenance(orchestra: Start, nc: NATS) -> None:
    await orchestra(hosts=LOCAL)
    outcome = await ask(nc, chat("sort a list", model="diverse", mode="diverse"))
    assert isinstance(outcome, GenerateResult) and outcome.model == "diverse"
    assert {r.provenance.family for r in outcome.responses} == {"smollm", "gemma"}
    assert len(outcome.responses) == 4
    assert {r.provenance.prompt_variant for r in outcome.responses} >= {"direct", "plan-first"}
    assert len({r.provenance.temperature for r in outcome.responses}) >= 2


async def test_ensemble_votes_and_escalates_when_models_disagree(orchestra: Start, nc: NATS) -> None:
    bus = await Recorder.listen(nc, "ensemble.escalated")
    await orchestra(hosts=LOCAL, answers={"smollm2-135m": "Paris", "gemma3-270m": "London"})
    outcome = await ask(nc, chat("capital of France?", mode="ensemble", model="ensemble"))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    assert outcome.consensus.escalated and outcome.consensus.consistency < 0.7
    escalated = await eventually(lambda: bus.of(Escalated))
    assert isinstance(escalated[0], Escalated) and escalated[0].request_id == outcome.request_id


async def test_ensemble_agrees_without_escalation(orchestra: Start, nc: NATS) -> None:
    await orchestra(hosts=LOCAL, answers={"smollm2-135m": "Paris", "gemma3-270m": "It is Paris."})
    outcome = await ask(nc, chat("capital of France?", mode="ensemble", model="ensemble"))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    assert not outcome.consensus.escalated and outcome.consensus.consistency == 1.0


async def test_a_route_with_validators_runs_its_primary_and_validators_as_a_consensus(
    orchestra: Start, nc: NATS
) -> None:
    """Mirador's declarative route: `validated_answer` (primary smollm2, validator gemma, threshold
    0.7) turns a single request into a vote of exactly those models."""
    worker = await orchestra(hosts=LOCAL, answers={"smollm2-135m": "Paris", "gemma3-270m": "London"})
    outcome = await ask(nc, chat("capital of France?", requirements=Requirements(route="validated_answer")))
    assert isinstance(outcome, GenerateResult) and outcome.consensus is not None
    assert outcome.consensus.escalated and outcome.consensus.threshold == 0.7
    assert sorted(s.model for s in worker.seen) == ["gemma3-270m", "smollm2-135m"]
    assert {r.provenance.model for r in outcome.responses} == {"smollm2-135m", "gemma3-270m"}


async def test_a_routes_timeout_ms_bounds_each_of_its_attempts(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """The `chat` route's timeout_ms (300 ms) replaces router.attempt_timeout (30 s): a hanging
    primary is given up on in time for the fallback to answer well within the request's 20 s."""
    cfg = test_config(
        tmp_path / "profile",
        nats_server.url,
        overrides={"router": {"attempt_timeout": "30s"}, "routes": {"chat": {"timeout_ms": 300}}},
    )
    worker = await actors.start(ScriptedWorker(cfg, hosts=LOCAL, script={"cpu0/smollm2-135m": ["hang"]}))
    router = await actors.start(Router(cfg, instance="route-timeout-router"))
    await eventually(lambda: router.view.hosts.data)
    outcome = await ask(nc, chat(), timeout=15)
    assert isinstance(outcome, GenerateResult) and outcome.model == "gemma3-270m"
    assert [s.model for s in worker.seen] == ["smollm2-135m", "gemma3-270m"]
    assert worker.seen[1].at - worker.seen[0].at < 5  # the route's 0.3 s, not the 30 s default


async def test_a_disabled_tier_is_not_used(orchestra: Start, nc: NATS) -> None:
    """The budget_guard's switch in KV: with premium disabled, a premium-only request is refused
    and a premium model is not dispatched to."""
    worker = await orchestra(hosts=LOCAL, providers=["openai", "together"])
    tiers = await TypedKV.open(nc.jetstream(), subjects.KV_TIERS, Codec(TierState))
    ok = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(ok, GenerateResult) and ok.model == "gpt-4o"
    await tiers.put("premium", TierState(tier="premium", enabled=False, reason="cost spike"))
    await asyncio.sleep(0.5)
    refused = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(refused, GenerateError) and refused.error.code == "unavailable"
    premium_only = await ask(nc, chat(requirements=Requirements(tiers=["premium"])))
    assert isinstance(premium_only, GenerateError)
    assert [s.model for s in worker.seen].count("gpt-4o") == 1


async def test_an_attempt_on_a_host_that_stops_heartbeating_fails_over_quickly(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """A gpu_host that dies mid-request is noticed by its stale heartbeat: the router moves the
    request to another host well before the (60 s) attempt timeout."""
    cfg = test_config(
        tmp_path / "two",
        nats_server.url,
        overrides={
            "router": {"attempt_timeout": "60s"},
            "cards": {"cpu1": {"device": "cpu", "memory": "1.5GB"}},
            "hosts": {"cpu1": {"cards": ["cpu1"], "heartbeat": "1s"}, "cpu0": {"cards": ["cpu0"], "heartbeat": "1s"}},
        },
    )
    worker = await actors.start(
        ScriptedWorker(
            cfg, hosts={"cpu0": ["smollm2-135m"], "cpu1": ["smollm2-135m"]}, script={"cpu0/smollm2-135m": ["hang"]}
        )
    )
    router = await actors.start(Router(cfg, instance="failover"))
    await eventually(lambda: len(router.view.hosts.data) == 2)
    request = chat(model="smollm2-135m", timeout_s=60)
    answer = asyncio.ensure_future(ask(nc, request, timeout=60))
    await eventually(lambda: worker.seen)
    assert worker.seen[0].where == "cpu0"
    started = time.monotonic()
    worker.silence("cpu0")
    outcome = await answer
    assert isinstance(outcome, GenerateResult) and outcome.target == "cpu1"
    assert time.monotonic() - started < 20
    assert await outcomes_stored(nc, request.id) == 1


@pytest.mark.slow
async def test_a_router_killed_mid_request_is_replaced_and_the_request_ends_once(nc: NATS, actors: Actors) -> None:
    """kill -9 of the router while it owns a request: the request message was never acknowledged,
    so a new router takes it over and exactly one outcome is stored. (Attempts do not time out here: the
    test is about the takeover, and a loaded machine must not turn the slow answer into a second attempt.)"""
    profile = actors.profile("p", overrides={"router": {"attempt_timeout": "60s"}})
    cfg = load_config(profile)
    worker = await actors.start(ScriptedWorker(cfg, hosts=LOCAL, script={"cpu0/smollm2-135m": ["slow:4"]}))
    first = await actors.process("actors.router", profile, ready="router started")
    request = chat(timeout_s=60)
    sub = await nc.subscribe(subjects.result(request.id))
    await nc.jetstream().publish(
        subjects.request("normal", request.id), encode(request), headers={"Nats-Msg-Id": request.id}
    )
    await eventually(lambda: worker.seen)
    first.kill()
    await actors.process("actors.router", profile)
    msg = await sub.next_msg(timeout=40)
    outcome = msgspec.json.decode(msg.data)
    assert outcome["kind"] == "result" and outcome["model"] == "smollm2-135m"
    await asyncio.sleep(1.0)
    assert await outcomes_stored(nc, request.id) == 1
    assert {(s.request_id, s.attempt) for s in worker.seen} == {(request.id, 0)}


async def test_a_backlogged_target_gets_an_event_and_new_work_goes_elsewhere(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """Requests pile up on SmolLM2 (its worker is stuck); over `backlog_depth` for `backlog_wait`
    it is marked backlogged: a queue.backlog event, a QueueState in KV, and new auto requests go to
    Gemma instead."""
    cfg = test_config(
        tmp_path / "bl", nats_server.url, overrides={"router": {"backlog_depth": 2, "backlog_wait": "1s"}}
    )
    bus = await Recorder.listen(nc, "queue.backlog")
    await actors.start(ScriptedWorker(cfg, hosts=LOCAL, script={"cpu0/smollm2-135m": ["hang"]}))
    router = await actors.start(Router(cfg, instance="bl"))
    await eventually(lambda: router.view.hosts.data)
    stuck = [chat(f"q{i}", model="smollm2-135m", timeout_s=60) for i in range(4)]
    for r in stuck:
        await nc.jetstream().publish(subjects.request("normal", r.id), encode(r), headers={"Nats-Msg-Id": r.id})
    backlog = await eventually(lambda: bus.of(QueueBacklog), timeout=15)
    assert backlog[0].target == "local:cpu0:smollm2-135m" and backlog[0].depth >= 3
    queues = await TypedKV.open(nc.jetstream(), subjects.KV_QUEUES, Codec(QueueState))
    state = await queues.get("local:cpu0:smollm2-135m")
    assert state is not None and state.backlog
    outcome = await ask(nc, chat("a chat that would have gone to SmolLM2"))
    assert isinstance(outcome, GenerateResult) and outcome.model == "gemma3-270m"


async def test_a_deadline_beyond_the_maximum_is_refused(orchestra: Start, nc: NATS) -> None:
    """router.max_deadline (600 s by default) bounds every deadline: the dedupe window covers it."""
    worker = await orchestra(hosts=LOCAL)
    outcome = await ask(nc, chat(timeout_s=86_400))
    assert isinstance(outcome, GenerateError) and outcome.error.code == "bad_request"
    assert "at most 600s" in outcome.error.message
    assert worker.seen == []
