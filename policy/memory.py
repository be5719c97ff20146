"""Memory accounting, quantisation choice and placement on a host's cards: pure functions of plain data.

    footprint = weights + KV cache (context x batch sequences) + overhead per card used
    plan(model, cards, ...) -> Plan          the variant, batch and cards a model gets, or NoFit (why)

The paper's rules (§3.5): a model whose FP16 weights exceed 20 GB runs at 4 bits ("4-bit quantization for
all models >20GB"); smaller ones take the most precise variant that fits — by measured perplexity when every
variant has one (``orchestra model quantize`` measures them), else by bits per weight. A model larger than any one card
is split over several cards of the host's group with ``tensor_split`` in proportion to their free memory
(§3.5.4, the 70B on two P40s); ``cards`` pinned in the library are used as given. ``max_batch_size`` is an
upper bound: when the KV cache of the full batch does not fit, the largest batch that fits is planned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.config.models import LocalModel, parse_params

GB = 1_000_000_000
FOUR_BIT_ABOVE = 20 * GB  # the paper's rule: models over 20 GB (FP16) run at 4 bits
FOUR_BIT_MAX_BITS = 5.0  # 4-bit families: q4_0, q4_k_m (~4.5-4.8 bits/weight), gptq-4bit


@dataclass(frozen=True)
class Card:
    name: str
    total: int
    used: int = 0

    @property
    def free(self) -> int:
        return self.total - self.used


@dataclass(frozen=True)
class Variant:
    quant: str
    bits: float
    weights: int  # bytes of weights in memory
    index: int = -1  # -1: the model's default entry, else its position in ``variants``
    perplexity: float | None = None  # measured on the project's fixed text (lower: more precise)


@dataclass(frozen=True)
class Footprint:
    weights: int
    kv: int
    overhead: int  # per card used

    def total(self, n_cards: int = 1) -> int:
        return self.weights + self.kv + self.overhead * n_cards


@dataclass(frozen=True)
class Placement:
    cards: tuple[str, ...]
    per_card: tuple[int, ...]  # bytes each card holds
    tensor_split: tuple[float, ...] | None  # None: one card


@dataclass(frozen=True)
class Plan:
    variant: Variant
    batch: int
    context: int
    footprint: Footprint
    placement: Placement
    reason: str = ""  # why this variant: the more precise ones that do not fit, and the memory they saw

    @property
    def bytes(self) -> int:
        return sum(self.placement.per_card)


@dataclass(frozen=True)
class NoFit:
    reason: str
    requested: int  # bytes of the smallest footprint tried
    free: int  # free bytes on the cards it could use
    total: int  # their total
    card: str  # the card (or card group, joined by "+") it was measured on


def kv_bytes_per_token_from_arch(
    n_layer: int, n_head_kv: int, head_dim_k: int, head_dim_v: int, dtype_bytes: int = 2
) -> int:
    """K and V of one token over all layers, at f16 (llama.cpp's default cache type)."""
    return n_layer * n_head_kv * (head_dim_k + head_dim_v) * dtype_bytes


def kv_bytes_per_token_from_params(n_params: float) -> int:
    """A conservative estimate for a model known only by its size (grouped-query attention, f16 cache):
    ~128 KB/token at 8B, ~320 KB at 70B, ~23 KB at 135M; fitted to Llama 3, SmolLM2 and Gemma 3 shapes."""
    return int(128_000 * (max(n_params, 1e6) / 8e9) ** 0.42)


def fp16_bytes(variants: Sequence[Variant]) -> int:
    """The model's FP16 size: a 16-bit variant's, else scaled from the most precise one known."""
    best = max(variants, key=lambda v: v.bits)
    return int(best.weights * 16 / best.bits)


def precision_order(variants: Sequence[Variant]) -> list[Variant]:
    """Most precise first: by measured perplexity when every variant has one (a variant requantised from a
    quantised file has more bits than its source but is no better: the measurement says so), else by bits;
    the smaller file first on a tie."""
    if variants and all(v.perplexity is not None for v in variants):
        return sorted(variants, key=lambda v: (v.perplexity or 0.0, v.weights))
    return sorted(variants, key=lambda v: (-v.bits, v.weights))


def allowed_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Most precise first; over 20 GB at FP16 only the 4-bit ones (the paper's rule)."""
    ordered = precision_order(variants)
    if fp16_bytes(variants) > FOUR_BIT_ABOVE:
        four = [v for v in ordered if v.bits <= FOUR_BIT_MAX_BITS]
        return four or ordered[-1:]
    return ordered


def place(need: Footprint, cards: Sequence[Card], *, pinned: bool = False) -> Placement | None:
    """Put a footprint on one card (best fit), else split it over the fewest cards with the most free
    memory, in proportion to their free memory. ``pinned``: use exactly ``cards``."""
    if not cards:
        return None
    if not pinned:
        fitting = [c for c in cards if need.total(1) <= c.free]
        if fitting:
            best = min(fitting, key=lambda c: (c.free, c.name))
            return Placement((best.name,), (need.total(1),), None)
        by_free = sorted(cards, key=lambda c: (-c.free, c.name))
        groups = [by_free[:k] for k in range(2, len(by_free) + 1)]
    else:
        groups = [list(cards)]
    for group in groups:
        if len(group) == 1:
            if need.total(1) <= group[0].free:
                return Placement((group[0].name,), (need.total(1),), None)
            continue
        usable = [max(0, c.free - need.overhead) for c in group]
        room = sum(usable)
        shared = need.weights + need.kv
        if room <= 0 or shared > room:
            continue
        shares = [u / room for u in usable]
        per_card = tuple(int(shared * s) + need.overhead for s in shares)
        if all(p <= c.free for p, c in zip(per_card, group, strict=True)):
            return Placement(tuple(c.name for c in group), per_card, tuple(round(s, 4) for s in shares))
    return None


def plan(
    variants: Sequence[Variant],
    cards: Sequence[Card],
    *,
    kv_bytes_per_token: int,
    context: int,
    max_batch: int,
    overhead: int,
    pinned: bool = False,
    max_bits: float | None = None,
) -> Plan | NoFit:
    """The best way to hold a model on these cards as they are now (``used`` counts what is loaded):
    the most precise allowed variant, then the largest batch, that fits. ``max_bits``: no variant more
    precise than this (a lower-bit reload after an OOM); ignored when it would leave none."""
    allowed = allowed_variants(variants)
    skipped = [f"{v.quant} (4-bit rule: over 20 GB at FP16)" for v in variants if v not in allowed]
    capped = [v for v in allowed if max_bits is None or v.bits <= max_bits]
    if capped and len(capped) < len(allowed):
        skipped += [f"{v.quant} (over the {max_bits:g} bits asked)" for v in allowed if v not in capped]
        allowed = capped
    free_text = _free_text(cards)
    for variant in allowed:
        for batch in range(max_batch, 0, -1):
            need = Footprint(variant.weights, kv_bytes_per_token * context * batch, overhead)
            placement = place(need, cards, pinned=pinned)
            if placement is not None:
                return Plan(variant, batch, context, need, placement, _why(variant, skipped, len(variants), free_text))
        skipped.append(f"{variant.quant} needs {_size(variant.weights + kv_bytes_per_token * context + overhead)}")
    smallest = min(allowed, key=lambda v: v.weights)
    need = Footprint(smallest.weights, kv_bytes_per_token * context, overhead)
    free = sum(max(c.free, 0) for c in cards)
    total = sum(c.total for c in cards)
    names = "+".join(c.name for c in cards)
    rule = " (4-bit: over 20 GB at FP16)" if len(allowed_variants(variants)) < len(variants) else ""
    return NoFit(
        f"needs {need.total(1) / GB:.3g} GB ({smallest.quant}{rule}: weights {smallest.weights / GB:.3g} GB + "
        f"KV cache {need.kv / GB:.3g} GB for {context} tokens + overhead {overhead / GB:.3g} GB), "
        f"{free / GB:.3g} GB free of {total / GB:.3g} GB on {names}",
        requested=need.total(1),
        free=free,
        total=total,
        card=names,
    )


def _size(n: int) -> str:
    return f"{n / GB:.3g} GB" if n >= GB else f"{n / 1e6:.4g} MB"


def _free_text(cards: Sequence[Card]) -> str:
    if len(cards) == 1:
        return f"{_size(max(0, cards[0].free))} free of {_size(cards[0].total)} on {cards[0].name}"
    free = max((c.free for c in cards), default=0)
    return f"{_size(max(0, free))} free on the roomiest of {'+'.join(c.name for c in cards)}"


def _why(variant: Variant, skipped: list[str], n_variants: int, free_text: str) -> str:
    measured = f", perplexity {variant.perplexity:g}" if variant.perplexity is not None else ""
    if not skipped:
        among = f" of {n_variants} variants" if n_variants > 1 else " (only) variant"
        return f"{variant.quant}: the most precise{among}{measured}"
    return f"{variant.quant}{measured}: {'; '.join(skipped)}; {free_text}"


def planned_variants(model: LocalModel) -> list[Variant]:
    """Every variant the library describes, sizes from the config (or params x bits when absent)."""
    params = parse_params(model.params)
    default = int(model.size) if model.size is not None else int(params * model.bits / 8)
    out = [Variant(model.quant, model.bits, default, -1, model.perplexity)]
    out += [Variant(v.quant, v.bits, int(v.size), i, v.perplexity) for i, v in enumerate(model.variants)]
    return out


def loadable_variants(model: LocalModel) -> list[Variant]:
    """The library's default file and the variants that have a file of their own (what a host can load)."""
    return [v for v in planned_variants(model) if v.index < 0 or model.variants[v.index].source is not None]


def planned_kv_bytes_per_token(model: LocalModel) -> int:
    if model.kv_bytes_per_token is not None:
        return model.kv_bytes_per_token
    return kv_bytes_per_token_from_params(parse_params(model.params))
