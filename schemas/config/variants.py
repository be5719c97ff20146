"""Quantisation variants made on this machine (``orchestra model quantize``), registered beside their files.

    <data_dir>/models/variants.json   {"variants": [RegisteredVariant, ...]}

Each entry is one GGUF file that llama.cpp's quantiser wrote from a library model, with what was measured
on it: its size, bits per weight, perplexity on the project's fixed text and decode speed. Loading a
profile adds every entry to its model's ``variants`` (``with_registered``), as if models.yaml listed it with
``source: {kind: path, path: ...}``, so the gpu_host, the rotator's planner and the monitor's remediation
all see the same choices. A registered variant replaces a described one of the same ``quant`` (the lab's
``variants`` for planning only); entries for models the profile lacks are ignored. The entry whose
``quant`` is the model's own is the measurement of its default file (``made_from`` empty): it gives the
model its ``perplexity``, so variants are ranked by measured quality when all of them have one.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from schemas.config.models import LocalModel, ModelCfg, PathSource, QuantVariant
from schemas.config.units import ByteSize

REGISTRY = "variants.json"


class RegisteredVariant(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    quant: str  # the label: q8_0, q4_k_m, q3_k_m+attn-q8_0 (a base type with per-tensor overrides)
    file: str  # absolute, or relative to <data_dir>/models
    bits: float  # measured: weights x 8 / parameters
    weights_bytes: int
    file_bytes: int
    base: str  # the type llama.cpp was asked for (q3_k_m)
    overrides: list[str] = []  # per-tensor types as PATTERN=TYPE ("attn_.*=q8_0")
    made_from: str = ""  # the quant of the file it was made from (q4_1: a requantisation)
    perplexity: float | None = None
    perplexity_text: str = ""  # which text (name:sha256[:12]) and how many tokens
    tokens_per_s: float | None = None  # greedy decode, batch 1, on the machine that made it
    created_at: float = 0.0


class Registry(msgspec.Struct, kw_only=True):
    variants: list[RegisteredVariant] = []

    def put(self, entry: RegisteredVariant) -> None:
        """Add an entry, replacing the one of the same model and quant."""
        self.variants = [v for v in self.variants if (v.model, v.quant) != (entry.model, entry.quant)] + [entry]

    def of(self, model: str) -> list[RegisteredVariant]:
        return [v for v in self.variants if v.model == model]


def registry_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "models" / REGISTRY


def read_registry(path: Path) -> Registry:
    """The registry at ``path``; empty when there is none. Raises ValueError naming the file when corrupt."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Registry()
    try:
        return msgspec.json.decode(raw, type=Registry)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not a variant registry ({exc})") from exc


def write_registry(path: Path, registry: Registry) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(registry), indent=1))
    os.replace(tmp, path)


def as_variant(entry: RegisteredVariant, models_dir: Path) -> QuantVariant:
    path = Path(entry.file)
    if not path.is_absolute():
        path = models_dir / path
    return QuantVariant(
        quant=entry.quant,
        bits=min(32.0, entry.bits),
        size=ByteSize(entry.weights_bytes),
        source=PathSource(path=str(path)),
        perplexity=entry.perplexity,
    )


def with_registered(model: LocalModel, entries: list[RegisteredVariant], models_dir: Path) -> LocalModel:
    """The model with its registered variants added (same quant: the registered file wins); an entry for
    the model's own default quant is the measurement of its default file (its perplexity)."""
    if not entries:
        return model
    mine = [as_variant(e, models_dir) for e in entries if e.quant != model.quant]
    names = {v.quant for v in mine}
    kept = [v for v in model.variants if v.quant not in names]
    own = next((e.perplexity for e in entries if e.quant == model.quant), None)
    return msgspec.structs.replace(model, variants=[*kept, *mine], perplexity=model.perplexity or own)


def registered_models(models: dict[str, ModelCfg], registry: Registry, models_dir: Path) -> dict[str, ModelCfg]:
    """Every model of a profile, local ones with their registered variants."""
    out = dict(models)
    for name, model in models.items():
        if isinstance(model, LocalModel):
            out[name] = with_registered(model, registry.of(name), models_dir)
    return out
