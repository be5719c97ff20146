"""Pricing: the paper's table, to the cent."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import llama_cpp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.cloud_proxy.clients import Call
from actors.cloud_proxy.clients.anthropic import AnthropicWire
from actors.cloud_proxy.clients.gemini import GeminiWire
from actors.cloud_proxy.clients.openai import OpenAIWire
from clients.budget import BudgetClient
from policy.pricing import cloud_cost, estimate_tokens, local_cost, max_input_tokens, worst_case_cost
from schemas.config import load_config
from schemas.config.models import CloudModel, LocalModel
from schemas.config.ops import LocalCostCfg
from schemas.dispatch import Target
from schemas.request import ChatMessage, GenerateRequest, make_request
from schemas.result import Usage
from tests.support.cloud import smollm2_path

LAB = load_config("lab")


def _cloud(name: str) -> CloudModel:
    model = LAB.models[name]
    assert isinstance(model, CloudModel)
    return model


@pytest.mark.parametrize(
    ("model", "input_tokens", "output_tokens", "usd"),
    [
        ("gpt-4o", 20_000_000, 0, 22.00),  # §8.2: ~20M tokens/month of GPT-4o = ~$22
        ("gemini-2.5-pro", 10_000_000, 0, 12.50),  # §8.2: ~10M tokens = ~$12.50
        ("claude-sonnet", 6_000_000, 0, 18.00),  # §8.2: ~6M tokens = ~$18
        ("together/llama3.1-70b", 50_000_000, 50_000_000, 88.00),  # §8.1: 100M x $0.88/M
        ("gpt-4o", 1000, 500, 0.0033),
    ],
)
def test_cloud_costs_match_the_papers_table(model: str, input_tokens: int, output_tokens: int, usd: float) -> None:
    cost = cloud_cost(_cloud(model), Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    assert cost == pytest.approx(usd, abs=1e-9)


def test_local_cost_uses_the_models_own_figure_then_the_profile() -> None:
    llama70 = LAB.models["llama3.1-70b"]
    small = LAB.models["llama3.1-8b"]
    assert isinstance(llama70, LocalModel) and isinstance(small, LocalModel)
    usage = Usage(input_tokens=60_000_000, output_tokens=40_000_000)
    assert local_cost(llama70, usage, LAB.budgets.local_cost) == pytest.approx(0.30)  # §8.1: $0.30 at 100M
    assert local_cost(small, usage, LAB.budgets.local_cost) == pytest.approx(0.10)


def test_electricity_mode_prices_watts_times_time() -> None:
    small = LAB.models["llama3.1-8b"]
    assert isinstance(small, LocalModel)
    cfg = LocalCostCfg(mode="electricity", kwh_usd=0.15)
    # a 250 W card busy for one hour at $0.15/kWh
    assert local_cost(small, Usage(), cfg, seconds=3600, watts=250) == pytest.approx(0.0375)


def test_worst_case_covers_max_tokens_at_the_output_price() -> None:
    gpt = _cloud("gpt-4o")
    assert worst_case_cost(gpt, 1000, 1000, LAB.budgets.local_cost) == pytest.approx((1000 * 1.10 + 1000 * 4.40) / 1e6)


def test_token_estimate_is_never_zero_and_errs_high() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("hello world, this is a prompt") >= 7


@pytest.fixture(scope="module")
def smollm2_vocab() -> Iterator[llama_cpp.Llama]:
    """SmolLM2's real tokenizer (vocabulary only), the model llama.cpp's server bills with in tests."""
    llm = llama_cpp.Llama(model_path=str(smollm2_path()), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def chatml_tokens(llm: llama_cpp.Llama, request: GenerateRequest) -> int:
    """What an OpenAI-compatible server with the ChatML template bills as prompt tokens."""
    turns = [(m.role, m.content) for m in request.messages or ()] or [("user", request.prompt or "")]
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns) + "<|im_start|>assistant\n"
    return len(llm.tokenize(text.encode(), add_bos=True, special=True))


def chat(*texts: str) -> GenerateRequest:
    """A chat of ``texts``: user, assistant, user, ..."""
    messages = [ChatMessage(role="assistant" if i % 2 else "user", content=t) for i, t in enumerate(texts)]
    return make_request(messages=messages)


def test_the_holds_input_bound_covers_what_chatml_bills_where_the_estimate_does_not(
    smollm2_vocab: llama_cpp.Llama,
) -> None:
    """The prompt "Say hello in one word." estimates 8 tokens (chars / 3) but is billed 15 with the
    ChatML template; the hold's bound (bytes + template allowance) covers it, and non-ASCII text."""
    hello = chat("Say hello in one word.")
    assert estimate_tokens("Say hello in one word.") == 8 and chatml_tokens(smollm2_vocab, hello) == 15
    assert max_input_tokens(hello) == 22 + 8 + 64
    for request in (
        hello,
        chat("你好，世界！" * 20),
        chat("Be brief.", "def f(x):\n    return x ** 2", "ok", "🙂" * 9),
    ):
        assert chatml_tokens(smollm2_vocab, request) <= max_input_tokens(request)
    completion = make_request(prompt="The capital of France is")
    assert chatml_tokens(smollm2_vocab, completion) <= max_input_tokens(completion)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=6))
def test_the_input_bound_holds_for_any_text(smollm2_vocab: llama_cpp.Llama, texts: list[str]) -> None:
    """Any Unicode in any number of messages: never more tokens than the bound."""
    request = chat(*texts)
    assert chatml_tokens(smollm2_vocab, request) <= max_input_tokens(request)


def test_a_request_without_max_tokens_holds_the_default_that_every_provider_is_sent() -> None:
    """No max_tokens from the client: the request carries the default (256), the router's hold covers
    256 output tokens and each provider's body asks for at most 256, never for "unlimited"."""
    request = make_request(messages=[ChatMessage(role="user", content="Say hello in one word.")])
    assert request.sampling.max_tokens == 256
    router = SimpleNamespace(cfg=LAB, instance="router-test")
    client = BudgetClient(router)  # type: ignore[arg-type]
    hold = client.worst_case(request, Target(tier="premium", model="gpt-4o", provider="openai"))
    assert hold == pytest.approx((max_input_tokens(request) * 1.10 + 256 * 4.40) / 1e6)
    call = Call(model="m", sampling=request.sampling, messages=request.messages)
    assert OpenAIWire().body(call)["max_tokens"] == 256
    assert AnthropicWire().body(call)["max_tokens"] == 256
    assert GeminiWire().body(call)["generationConfig"]["maxOutputTokens"] == 256
