"""models: the library. Local GGUF/GGML models (kind: local) and cloud models (kind: cloud)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schemas.base import Capability, KeepAlive
from schemas.config.base import Cfg, TaggedCfg
from schemas.config.units import ByteSize, Duration


class PackageSource(TaggedCfg, frozen=True, kw_only=True, tag="package"):
    """A file shipped inside an installed distribution, found via importlib.metadata (no import)."""

    package: str
    file: str


class AssembledSource(TaggedCfg, frozen=True, kw_only=True, tag="assembled"):
    """A file split over chunk packages; ``module.assemble(output_path=...)`` joins and verifies it."""

    package: str
    module: str
    file: str


class PathSource(TaggedCfg, frozen=True, kw_only=True, tag="path"):
    """A file on disk; ``storage`` names a storage tier whose path prefixes a relative ``path``."""

    path: str
    storage: str | None = None


Source = PackageSource | AssembledSource | PathSource


class QuantVariant(Cfg, frozen=True, kw_only=True):
    quant: str  # f16, q8_0, q4_k_m, gptq-4bit, ...
    bits: Annotated[float, Meta(gt=0, le=32)]
    size: ByteSize
    source: Source | None = None
    quality_loss: Annotated[float, Meta(ge=0, le=1)] | None = None
    perplexity: Annotated[float, Meta(gt=0)] | None = None  # measured on a fixed text (orchestra model quantize)


class Price(Cfg, frozen=True, kw_only=True):
    """US dollars per million tokens."""

    input: Annotated[float, Meta(ge=0)]
    output: Annotated[float, Meta(ge=0)]


_PARAMS = re.compile(r"^\s*~?(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.I)


def parse_params(text: str) -> float:
    """'70B' -> 7e10, '135M' -> 1.35e8. Raises ValueError on anything else."""
    m = _PARAMS.match(text)
    if not m:
        raise ValueError(f"invalid parameter count {text!r}: use e.g. '135M', '7B', '70B'")
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]
    return float(m.group(1)) * scale


class LocalModel(TaggedCfg, frozen=True, kw_only=True, tag="local"):
    family: str
    params: str  # "135M", "70B"
    engine: Literal["llama_cpp", "ctransformers"] = "llama_cpp"
    model_type: str | None = None  # ctransformers architecture (gpt2, llama, mpt, ...)
    source: Source | None = None  # None: described for planning only (no file on this machine)
    quant: str = "q4_k_m"
    bits: Annotated[float, Meta(gt=0, le=32)] = 4.5
    size: ByteSize | None = None  # weights in memory; None: read from the file
    variants: list[QuantVariant] = []  # other quantisations of the same model
    context_length: Annotated[int, Meta(ge=128)] = 2048
    max_batch_size: Annotated[int, Meta(ge=1, le=256)] = 1
    chat_format: str | None = None  # llama.cpp chat format; required when the GGUF has no template
    completion_only: bool = False  # a base model: serves /v1/completions best
    specialisations: list[Capability] = msgspec.field(default_factory=lambda: ["general"])
    quality: Annotated[int, Meta(ge=1, le=10)] = 5
    speed_tps: Annotated[float, Meta(gt=0)] | None = None  # nominal tokens/s on its card
    storage: str | None = None  # storage tier holding the file (fast / slow)
    keep_alive: KeepAlive = "warm"
    keep_alive_ttl: Duration = Duration(300)
    cards: list[str] = []  # pinned placement (the paper's deployment `gpus:`)
    n_gpu_layers: int = -1  # -1: everything on the card (ignored on a CPU card)
    kv_bytes_per_token: Annotated[int, Meta(ge=0)] | None = None  # None: estimated from params
    perplexity: Annotated[float, Meta(gt=0)] | None = None  # of the default file (orchestra model quantize)
    price_per_million: Annotated[float, Meta(ge=0)] | None = None  # None: budgets.local_cost
    description: str = ""


class CloudModel(TaggedCfg, frozen=True, kw_only=True, tag="cloud"):
    provider: str
    remote_name: str
    family: str
    price: Price
    context_length: Annotated[int, Meta(ge=128)] = 128_000
    quality: Annotated[int, Meta(ge=1, le=10)] = 8
    specialisations: list[Capability] = msgspec.field(default_factory=lambda: ["general"])
    speed_tps: Annotated[float, Meta(gt=0)] | None = None
    description: str = ""


ModelCfg = LocalModel | CloudModel


class EmbeddingModel(Cfg, frozen=True, kw_only=True):
    """A cloud embedding model (``POST /v1/embeddings`` with this name): OpenAI-compatible ``/embeddings``
    or Gemini ``batchEmbedContents`` of its provider. Anthropic offers no embeddings API. Kept apart from
    ``models``: nothing routes chat or completions to it."""

    provider: str
    remote_name: str
    price: Annotated[float, Meta(ge=0)]  # US dollars per million input tokens
    dimensions: Annotated[int, Meta(ge=1)] | None = None  # None: the provider's default size
    max_inputs: Annotated[int, Meta(ge=1, le=2048)] = 100  # texts per request (Gemini: at most 100)
    description: str = ""
