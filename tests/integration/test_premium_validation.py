"""Premium validation that validates (in-process actors, real nats-server, a real cloud_proxy talking to a
local OpenAI-compatible HTTP server that stands in for premium): the client gets the local answer, a
premium answer to the same request is obtained alongside through the budget_guard's hold and charge,
the two are compared, the monitor records each model's agreement, and the router's ``quality`` strategy
switches from the configured rank to the measured figure once enough checks exist. A budget that
refuses the premium call skips the check, with the reason counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from actors.budget_guard.actor import BudgetGuard
from actors.cloud_proxy.actor import CloudProxy
from actors.diversity_monitor.actor import DiversityMonitor
from actors.router.actor import Router
from bus import subjects
from bus.consumer import ConsumerSpec
from schemas.events import AnyEvent, ValidationCompared, ValidationSkipped
from schemas.request import GenerateRequest, Requirements, make_request
from schemas.result import GenerateResult
from tests.support.actors import Actors
from tests.support.budget import settled, summary
from tests.support.client import ask
from tests.support.events import Recorder
from tests.support.minilm import embedder as shared_embedder
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

KEY_ENV = "ORCH_TEST_PREMIUM_KEY"
KEY = "sk-test-premium-validation-0001"
PREMIUM_ANSWER = "Paris."
LOCAL_ANSWERS = {"smollm2-135m": "London", "gemma3-270m": "Paris"}  # SmolLM2 disagrees, Gemma agrees
MIN_SAMPLES = 3


class OpenAIStandIn:
    """An OpenAI-compatible server on 127.0.0.1 (chat and text completions) that always answers Paris."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> OpenAIStandIn:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.answer)
        app.router.add_post("/v1/completions", self.answer)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def answer(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        self.calls.append(body)
        chat = request.path.endswith("/chat/completions")
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": PREMIUM_ANSWER}
        else:
            choice["text"] = PREMIUM_ANSWER
        usage = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
        kind = "chat.completion" if chat else "text_completion"
        answer = {"id": f"cmpl-{len(self.calls)}", "object": kind, "model": body["model"], "choices": [choice]}
        return web.json_response({**answer, "usage": usage})


class LocalCard(ScriptedWorker):
    """The scripted worker as one local gpu_host only: cloud dispatches are the real cloud_proxy's."""

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream="DISPATCH",
                durable="scripted",
                subjects=(subjects.DISPATCH_HOSTS,),
                handler=self.handle,
                concurrency=16,
                **self.consumer_defaults(),
            )
        ]


class Orchestra:
    def __init__(self, actors: Actors, premium: OpenAIStandIn) -> None:
        self.actors, self.nc, self.premium = actors, actors.nc, premium
        self.heard = Recorder()
        self.router: Router

    @property
    def events(self) -> list[AnyEvent]:
        return self.heard.events

    async def start(self, budgets: dict[str, Any] | None = None) -> None:
        overrides = {
            "phases": {"phase_1_subject_expertise": {"validation_share": 1.0}},
            "router": {"attempt_timeout": "10s", "validation": {"min_samples": MIN_SAMPLES, "window": 10}},
            "providers": {"openai": {"base_url": self.premium.base_url, "api_key": {"env": KEY_ENV}}},
            "budgets": budgets or {},
        }
        cfg = self.actors.config(overrides=overrides)
        self.router = Router(cfg, instance="test-router")
        monitor = DiversityMonitor(cfg, instance="test-monitor", embedder=shared_embedder())
        worker = LocalCard(cfg, hosts={"cpu0": list(LOCAL_ANSWERS)}, answers=LOCAL_ANSWERS)
        self.heard = await Recorder.listen(self.nc, "validation.>")
        for actor in [BudgetGuard(cfg), CloudProxy(cfg), worker, monitor, self.router]:
            await self.actors.start(actor)
        await eventually(lambda: self.router.view.hosts.data and "openai" in self.router.view.providers.data)

    def verdict(self, request_id: str) -> AnyEvent | None:
        return next((e for e in self.events if getattr(e, "request_id", None) == request_id), None)

    async def ask(self, request: GenerateRequest) -> tuple[GenerateResult, AnyEvent]:
        result = await ask(self.nc, request)
        assert isinstance(result, GenerateResult), result
        event = await eventually(lambda: self.verdict(request.id), timeout=20)
        return result, event


@pytest.fixture
async def orchestra(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Orchestra]:
    monkeypatch.setenv(KEY_ENV, KEY)
    premium = await OpenAIStandIn().start()
    yield Orchestra(actors, premium)
    await actors.stop_all()  # before the stand-in the cloud_proxy calls
    await premium.stop()


def completion(model: str | None = None) -> GenerateRequest:
    wants = Requirements(strategy="quality", capability="general")
    return make_request(prompt="The capital of France is", model=model, requirements=wants, timeout_s=30)


@pytest.mark.slow
async def test_the_client_gets_the_local_answer_and_measured_agreement_takes_over_the_quality_strategy(
    orchestra: Orchestra, nc: NATS
) -> None:
    await orchestra.start()
    first, verdict = await orchestra.ask(completion())  # both rank 2: SmolLM2 wins the tie on its rank
    assert (first.model, first.tier, first.text) == ("smollm2-135m", "local", "London")
    assert isinstance(verdict, ValidationCompared) and not verdict.agreed
    assert (verdict.model, verdict.premium_model) == ("smollm2-135m", "gpt-4o")
    sent = orchestra.premium.calls[0]
    assert sent["model"] == "gpt-4o" and sent["prompt"] == "The capital of France is"  # the same request
    assert json.dumps(sent).count("London") == 0

    for model in ["smollm2-135m"] * (MIN_SAMPLES - 1) + ["gemma3-270m"] * MIN_SAMPLES:
        result, verdict = await orchestra.ask(completion(model))
        assert result.text == LOCAL_ANSWERS[model] and result.tier == "local"
        assert isinstance(verdict, ValidationCompared) and verdict.agreed is (model == "gemma3-270m")
    assert len(orchestra.premium.calls) == 2 * MIN_SAMPLES

    view = orchestra.router.view
    measured = await eventually(lambda: len(view.measured()) == 2 and view.measured())
    assert measured == {"smollm2-135m": 0.0, "gemma3-270m": 10.0}
    switched, verdict = await orchestra.ask(completion())
    assert (switched.model, switched.text) == ("gemma3-270m", "Paris")
    assert isinstance(verdict, ValidationCompared) and verdict.agreed

    shadows = [f"{e.request_id}-pv" for e in orchestra.events]
    await eventually(lambda: settled(nc, *shadows))
    ledger = await summary(nc)
    assert ledger.by_tier.get("premium", 0) > 0 and ledger.open_reservations <= 1  # charged; a lease may stay
    assert not orchestra.router.pairs.by_id


@pytest.mark.slow
async def test_a_budget_that_refuses_the_premium_call_skips_the_check_with_its_reason(orchestra: Orchestra) -> None:
    await orchestra.start({"limits": [{"scope": "tier", "name": "premium", "period": "daily", "hard_usd": 0.0001}]})
    result, verdict = await orchestra.ask(completion("gemma3-270m"))
    assert (result.model, result.text) == ("gemma3-270m", "Paris")  # served as if nothing happened
    assert isinstance(verdict, ValidationSkipped) and verdict.reason == "budget_exceeded"
    assert verdict.model == "gemma3-270m" and not orchestra.premium.calls
    quality = orchestra.router.view.quality
    record = await eventually(lambda: quality.data.get("gemma3-270m"))
    assert record.skipped == {"budget_exceeded": 1} and record.samples == 0 and record.measured is None
