"""Quantisation variants through llama.cpp's own quantiser (``llama_model_quantize``).

    spec = QuantSpec.parse("q3_k_m", ["attn_.*=q8_0", "output=q8_0"])   # mixed precision
    spec.label                                                          # 'q3_k_m+attn-q8_0+output-q8_0'
    quantize(src, dst, spec, threads=2, allow_requantize=True)          # blocking, seconds for 135M

``base`` is a llama.cpp file type (q4_k_m, q5_k_m, q8_0, ...: the whole model); ``overrides`` keep the tensors
whose name matches a regular expression at another ggml type (llama.cpp's ``tt_overrides``, the
``--tensor-type`` of llama-quantize), e.g. attention and the output head at 8 bits over a 3-bit body.
llama.cpp falls back to a legal type for tensors whose rows the chosen type cannot hold (SmolLM2's
576-wide feed-forward rows are not a multiple of the 256 that k-quants need: they become q4_0/q5_0).

Requantising (a source that is already quantised, as both shipped small models are: SmolLM2 Q4_1, Gemma 3
Q4_K_M) needs ``allow_requantize``: the weights are dequantised and quantised again, so a variant is never
better than its source — more bits only cost memory. Quantise from an F16/F32 GGUF where there is one.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as lc
from gguf import GGMLQuantizationType

from actors.gpu_host.errors import GpuHostError
from actors.gpu_host.llama_engine import install_llama_log

# llama_ftype: what llama-quantize accepts as its type argument (lower case here)
FILE_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q2_k": 10,
    "q3_k_s": 11,
    "q3_k_m": 12,
    "q3_k_l": 13,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq4_nl": 25,
    "iq4_xs": 30,
    "bf16": 32,
}
# ggml types a tensor may be overridden to
TENSOR_TYPES: dict[str, int] = {t.name.lower(): int(t.value) for t in GGMLQuantizationType}


class QuantiseError(GpuHostError):
    """llama.cpp refused to quantise (a quantised source without allow_requantize, an unknown type)."""


@dataclass(frozen=True)
class QuantSpec:
    base: str
    overrides: tuple[tuple[str, str], ...] = ()  # (regex over tensor names, ggml type)
    name: str = ""  # the label to register it under (default: derived)

    @classmethod
    def parse(cls, base: str, overrides: list[str] | tuple[str, ...] = (), name: str = "") -> QuantSpec:
        """Raises ValueError naming the bad part: an unknown type, a pattern that is not a regex."""
        b = base.strip().lower()
        if b not in FILE_TYPES:
            raise ValueError(f"unknown quantisation {base!r}: use one of {', '.join(FILE_TYPES)}")
        pairs: list[tuple[str, str]] = []
        for raw in overrides:
            pattern, sep, typ = raw.rpartition("=")
            typ = typ.strip().lower()
            if not sep or not pattern:
                raise ValueError(f"tensor override {raw!r}: write PATTERN=TYPE, e.g. 'attn_.*=q8_0'")
            if typ not in TENSOR_TYPES:
                raise ValueError(f"tensor override {raw!r}: unknown ggml type {typ!r}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"tensor override {raw!r}: {pattern!r} is not a regular expression ({exc})") from exc
            pairs.append((pattern, typ))
        if name and not re.fullmatch(r"[a-z0-9][a-z0-9_.+-]*", name):
            raise ValueError(f"variant name {name!r}: use lower-case letters, digits and _ . + -")
        return cls(b, tuple(pairs), name)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.base] + [f"{_short(p)}-{t}" for p, t in self.overrides]
        return "+".join(parts)

    @property
    def override_texts(self) -> list[str]:
        return [f"{p}={t}" for p, t in self.overrides]


def _short(pattern: str) -> str:
    """'attn_.*' -> 'attn', 'blk\\.0\\..*' -> 'blk0', 'output' -> 'output'."""
    word = re.sub(r"[^a-z0-9]+", "", pattern.lower().split(".*")[0])
    return word or "t"


def quantize(src: Path, dst: Path, spec: QuantSpec, *, threads: int = 0, allow_requantize: bool = False) -> None:
    """Write ``dst`` (atomically: a temporary file renamed) from ``src``. Blocking. Raises QuantiseError
    with llama.cpp's own explanation (e.g. that the source is quantised and requantising was not allowed)."""
    lines = install_llama_log()
    lines.clear()
    params = lc.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = FILE_TYPES[spec.base]
    params.allow_requantize = allow_requantize
    keep: ctypes.Array[lc.llama_model_tensor_override] | None = None
    if spec.overrides:
        keep = (lc.llama_model_tensor_override * (len(spec.overrides) + 1))()
        for i, (pattern, typ) in enumerate(spec.overrides):
            keep[i].pattern = pattern.encode()
            keep[i].type = TENSOR_TYPES[typ]
        keep[len(spec.overrides)].pattern = None  # the list ends with a null pattern
        params.tt_overrides = keep
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    rc = lc.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    del keep
    if rc != 0:
        tmp.unlink(missing_ok=True)
        why = [line for line in lines if "error" in line.lower() or "requantiz" in line.lower()] or list(lines)[-3:]
        hint = "" if allow_requantize else " (a quantised source needs --allow-requantize)"
        raise QuantiseError(f"llama.cpp could not quantise {src} to {spec.label}: {'; '.join(why)[-500:]}{hint}")
    tmp.replace(dst)
