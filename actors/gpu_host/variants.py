"""Make a quantisation variant of a library model, measure it and register it (``orchestra model quantize``).

    entry = make_variant(cfg, "smollm2-135m", QuantSpec.parse("q8_0"), allow_requantize=True)

The file goes to ``<data_dir>/models/<model>/<model>-<label>.gguf``; its size and bits per weight are read
from the GGUF header as the gpu_host reads them, its perplexity and decode speed measured
(actors/gpu_host/quality.py), and the entry written to ``<data_dir>/models/variants.json``, from which every
actor's config and a running gpu_host's library pick it up (schemas/config/variants.py). The model's default
file is measured too, once (an entry under its own quant): with every variant measured, the hosts rank them
by perplexity. Blocking.
"""

from __future__ import annotations

import time
from pathlib import Path

from actors.gpu_host.quality import QUALITY_TEXT, Measured, measure
from actors.gpu_host.quantise import QuantSpec, quantize
from schemas.config.root import OrchestraConfig
from schemas.config.variants import RegisteredVariant, read_registry, registry_path, write_registry
from weights.library import ModelLibrary, ResolvedModel, read_gguf


def variant_file(data_dir: Path, model: str, label: str) -> Path:
    return data_dir / "models" / model / f"{model}-{label}.gguf"


def make_variant(
    cfg: OrchestraConfig,
    model: str,
    spec: QuantSpec,
    *,
    allow_requantize: bool = False,
    threads: int = 0,
    measured: bool = True,
    text: Path = QUALITY_TEXT,
    data_dir: Path | None = None,
    gen_tokens: int = 64,
) -> RegisteredVariant:
    """Quantise the model's default file to ``spec``, measure it, register it; the registry entry.
    Raises ModelNotFound (no source file), QuantiseError (llama.cpp refused), ValueError (the label is the
    model's own default quant)."""
    data = Path(data_dir if data_dir is not None else cfg.data_dir)
    library = ModelLibrary(cfg, data)
    source = library.resolve(model)
    if spec.label == source.variant.quant:
        raise ValueError(f"{model!r} is {spec.label} already: its default file; choose another type or --name")
    dst = variant_file(data, model, spec.label)
    quantize(source.path, dst, spec, threads=threads, allow_requantize=allow_requantize)
    info = read_gguf(dst)
    m: Measured | None = (
        measure(dst, text=text, threads=max(1, threads or 2), gen_tokens=gen_tokens) if measured else None
    )
    models_dir = data / "models"
    entry = RegisteredVariant(
        model=model,
        quant=spec.label,
        file=str(dst.relative_to(models_dir)),
        bits=round(info.weights_bytes * 8 / max(1, info.n_params), 3),
        weights_bytes=info.weights_bytes,
        file_bytes=dst.stat().st_size,
        base=spec.base,
        overrides=spec.override_texts,
        made_from=source.variant.quant,
        perplexity=m.perplexity if m else None,
        perplexity_text=m.perplexity_text if m else "",
        tokens_per_s=m.tokens_per_s if m else None,
        created_at=time.time(),
    )
    path = registry_path(data)
    registry = read_registry(path)
    registry.put(entry)
    if m is not None:
        known = next((e for e in registry.of(model) if e.quant == source.variant.quant), None)
        if known is None or known.perplexity_text != m.perplexity_text:  # once per text
            registry.put(_reference(source, text, threads, gen_tokens))
    write_registry(path, registry)
    return entry


def _reference(source: ResolvedModel, text: Path, threads: int, gen_tokens: int) -> RegisteredVariant:
    """The default file measured the same way: the yardstick the variants are ranked against."""
    m = measure(source.path, text=text, threads=max(1, threads or 2), gen_tokens=gen_tokens)
    return RegisteredVariant(
        model=source.name,
        quant=source.variant.quant,
        file=str(source.path),
        bits=round(source.weights_bytes * 8 / max(1, source.n_params), 3),
        weights_bytes=source.weights_bytes,
        file_bytes=source.file_bytes,
        base=source.variant.quant,
        perplexity=m.perplexity,
        perplexity_text=m.perplexity_text,
        tokens_per_s=m.tokens_per_s,
        created_at=time.time(),
    )
