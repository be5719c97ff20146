"""What a call costs, in US dollars: pure functions of the pricing table and usage.

cloud_cost(model, usage)                       input x price.input + output x price.output (per 1M)
local_cost(model, usage, local_cost, seconds, watts)   per-million figure, or electricity
worst_case_cost(model, prompt_tokens, max_tokens, ...)  what a reservation must cover
max_input_tokens(request)                      a true upper bound on the input tokens billed (holds)
estimate_tokens(text)                          a rough count before the model tokenises (routing, rates)
"""

from __future__ import annotations

import math

from schemas.config.models import CloudModel, LocalModel
from schemas.config.ops import LocalCostCfg
from schemas.request import GenerateRequest
from schemas.result import Usage

PER_MILLION = 1_000_000
TEMPLATE_TOKENS_PER_MESSAGE = 8  # a chat template's tokens around one message (role, delimiters)
TEMPLATE_TOKENS_PER_REQUEST = 64  # ... and around the whole chat (BOS, reply priming, a default system text)


def cloud_cost(model: CloudModel, usage: Usage) -> float:
    return (usage.input_tokens * model.price.input + usage.output_tokens * model.price.output) / PER_MILLION


def local_cost(
    model: LocalModel,
    usage: Usage,
    local: LocalCostCfg,
    *,
    seconds: float = 0.0,
    watts: float = 0.0,
) -> float:
    """A model's own per-million figure wins; else the profile's mode (per million, or electricity
    = card watts x generation time x $/kWh)."""
    if model.price_per_million is not None:
        return usage.total_tokens * model.price_per_million / PER_MILLION
    if local.mode == "electricity":
        return watts * seconds / 3600.0 / 1000.0 * local.kwh_usd
    return usage.total_tokens * local.per_million_usd / PER_MILLION


def worst_case_cost(model: CloudModel | LocalModel, prompt_tokens: int, max_tokens: int, local: LocalCostCfg) -> float:
    usage = Usage(input_tokens=prompt_tokens, output_tokens=max_tokens)
    if isinstance(model, CloudModel):
        return cloud_cost(model, usage)
    return local_cost(model, usage, local)


def estimate_tokens(text: str) -> int:
    """A rough count before tokenisation, ~3 characters per token for English and code. Not a bound:
    a chat template adds tokens of its own, and some text needs more than one token per 3 characters
    ("Say hello in one word." estimates 8, ChatML bills 15). Budget holds use :func:`max_input_tokens`."""
    return max(1, math.ceil(len(text) / 3))


def max_input_tokens(request: GenerateRequest) -> int:
    """An upper bound on the input tokens a provider can bill for ``request``:

        sum of UTF-8 bytes of every message text (or of the prompt)
        + TEMPLATE_TOKENS_PER_MESSAGE x messages + TEMPLATE_TOKENS_PER_REQUEST

    Every token of a byte-level BPE (GPT, Llama 3) or of a SentencePiece vocabulary with byte fallback
    (Gemini, Gemma) stands for at least one byte of the text, so the text never takes more tokens than
    it has bytes (Anthropic does not publish its tokenizer: the bound assumes it is no worse). What is
    not text is the chat template: per message a role and delimiters (ChatML 5 tokens, Llama 3 5,
    OpenAI's documented 3-4) and SentencePiece's one dummy prefix; per request the BOS, the reply
    priming and any default system text the template inserts (Llama 3.1 adds its "Cutting Knowledge
    Date" header, about 25 tokens). The constants cover those with room to spare; a provider whose
    template inserts more is outside the bound. A completion prompt counts as one message."""
    if request.prompt is not None:
        texts = [request.prompt]
    else:
        texts = [m.content for m in request.messages or ()]
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return text_bytes + TEMPLATE_TOKENS_PER_MESSAGE * max(1, len(texts)) + TEMPLATE_TOKENS_PER_REQUEST
