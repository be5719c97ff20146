"""Quantisation variants of the shipped small models: size, perplexity and speed per variant.

    python -m bench.quantisation                          # both models, the default variant list, 2 threads
    python -m bench.quantisation --models smollm2-135m --variants q8_0 'q3_k_m:attn_.*=q8_0,output=q8_0'
    python -m bench.quantisation --json results.json --gpu-layers 99   # on a CUDA build: decode on the card

Each variant is made with ``actors.gpu_host.variants.make_variant`` (llama.cpp's quantiser, requantising
the shipped quantised file) into a temporary data dir, then measured: perplexity on the project's fixed
text (actors/gpu_host/data/quality.txt, 256-token chunks, second halves scored), greedy decode tokens/s at
batch 1, and tokens/s of 4 sequences decoded together (bench/llama_batched.py, llama.cpp without a
scheduler). The default file of each model is measured the same way. A variant spec is TYPE or
TYPE:PATTERN=TYPE,PATTERN=TYPE (mixed precision).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.gpu_host.quality import measure
from actors.gpu_host.quantise import QuantSpec
from actors.gpu_host.variants import make_variant
from bench.llama_batched import kernel_run
from schemas.config import load_config
from weights.library import ModelLibrary, read_gguf

DEFAULT_VARIANTS = ["q8_0", "q5_k_m", "q4_k_m", "q4_0", "q4_0:attn_.*=q8_0", "q3_k_m", "q2_k"]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "The three primary colours are"]


def spec_of(text: str) -> QuantSpec:
    base, _, keep = text.partition(":")
    return QuantSpec.parse(base, [k for k in keep.split(",") if k])


def row(model: str, quant: str, path: Path, made_s: float | None, args: argparse.Namespace) -> dict[str, Any]:
    info = read_gguf(path)
    m = measure(path, threads=args.threads, gen_tokens=args.tokens, gpu_layers=args.gpu_layers)
    batched = kernel_run(path, PROMPTS, args.tokens, args.threads, 512)
    return {
        "model": model,
        "variant": quant,
        "bits": round(info.weights_bytes * 8 / info.n_params, 2),
        "size_mb": round(path.stat().st_size / 1e6, 1),
        "perplexity": m.perplexity,
        "tok_s": m.tokens_per_s,
        "tok_s_batch4": round(batched["tok_s"], 1),
        "quantise_s": round(made_s, 1) if made_s is not None else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64, help="tokens decoded per speed measurement")
    p.add_argument("--gpu-layers", type=int, default=0, help="layers on the GPU for the single-sequence run")
    p.add_argument("--json", type=Path, help="write the rows here too")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        data = Path(tmp)
        cfg = load_config("local")
        library = ModelLibrary(cfg, data)
        for model in args.models:
            source = library.resolve(model)
            rows.append(row(model, f"{source.variant.quant} (shipped)", source.path, None, args))
            print(_line(rows[-1]), flush=True)
            for text in args.variants:
                spec = spec_of(text)
                if spec.label == source.variant.quant:
                    continue
                started = time.perf_counter()
                entry = make_variant(
                    cfg, model, spec, allow_requantize=True, threads=args.threads, measured=False, data_dir=data
                )
                made_s = time.perf_counter() - started
                rows.append(row(model, entry.quant, data / "models" / entry.file, made_s, args))
                print(_line(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _line(r: dict[str, Any]) -> str:
    made = f"{r['quantise_s']} s" if r["quantise_s"] is not None else "-"
    return (
        f"| {r['model']} | {r['variant']} | {r['bits']} | {r['size_mb']} | {r['perplexity']:.2f} | "
        f"{r['tok_s']} | {r['tok_s_batch4']} | {made} |"
    )


if __name__ == "__main__":
    main()
