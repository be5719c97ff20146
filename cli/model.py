"""``orchestra model``: quantisation variants of the library's local models (works on files, not the bus).

    orchestra model quantize smollm2-135m --to q8_0 --allow-requantize
    orchestra model quantize smollm2-135m --to q3_k_m --keep 'attn_.*=q8_0' --keep 'output=q8_0' --allow-requantize
    orchestra model variants [MODEL]

The variant is written under ``<data_dir>/models/<model>/``, measured (size, bits per weight, perplexity on
the project's fixed text, decode tokens/s) and registered in ``<data_dir>/models/variants.json``; gpu_hosts
that share the data dir pick it up at their next load of the model, other actors when they start.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from cli.common import config_of
from schemas.config.variants import read_registry, registry_path


def register(sub: Any) -> None:
    p = sub.add_parser("model", help="quantisation variants of local models")
    cmds = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    q = cmds.add_parser("quantize", help="make, measure and register a quantisation variant")
    q.add_argument("model", help="a local model of the library")
    q.add_argument("--to", required=True, help="llama.cpp type: q4_k_m, q5_k_m, q8_0, q3_k_m, q6_k, f16, ...")
    q.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="PATTERN=TYPE",
        help="mixed precision: tensors whose name matches PATTERN get TYPE (e.g. 'attn_.*=q8_0'); repeatable",
    )
    q.add_argument("--name", default="", help="register it under this label (default: derived from the types)")
    q.add_argument(
        "--allow-requantize",
        action="store_true",
        help="the source file is quantised already (both shipped small models are): dequantise and requantise",
    )
    q.add_argument("--threads", type=int, default=0, help="quantiser threads (0: all cores)")
    q.add_argument("--no-measure", action="store_true", help="skip the perplexity and speed measurement")
    q.set_defaults(run=run_quantize)
    v = cmds.add_parser("variants", help="the variants each local model has (configured and registered)")
    v.add_argument("model", nargs="?", help="only this model")
    v.set_defaults(run=run_variants)


def run_quantize(args: argparse.Namespace) -> int:
    from actors.gpu_host.errors import HOST_ERRORS  # llama.cpp is loaded only by this subcommand
    from actors.gpu_host.quantise import QuantSpec
    from actors.gpu_host.variants import make_variant

    cfg = config_of(args)
    spec = QuantSpec.parse(args.to, args.keep, args.name)
    logging.getLogger("llama_cpp").setLevel(logging.CRITICAL)  # the quantiser reports every tensor
    try:
        entry = make_variant(
            cfg,
            args.model,
            spec,
            allow_requantize=args.allow_requantize,
            threads=args.threads,
            measured=not args.no_measure,
        )
    except HOST_ERRORS as exc:
        raise ValueError(str(exc)) from exc
    print(f"{entry.model} {entry.quant}: {entry.file_bytes / 1e6:.1f} MB, {entry.bits:.2f} bits/weight", end="")
    if entry.perplexity is not None:
        print(f", perplexity {entry.perplexity:.3f}, {entry.tokens_per_s:.1f} tokens/s", end="")
    print(f" (from {entry.made_from})")
    print(f"registered in {registry_path(cfg.data_dir)}: models/{entry.file}")
    return 0


def run_variants(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    registry = read_registry(registry_path(cfg.data_dir))
    measured = {(e.model, e.quant): e for e in registry.variants}
    rows: list[tuple[str, ...]] = [("model", "quant", "bits", "size", "perplexity", "tok/s", "file")]
    for name, model in cfg.local_models().items():
        if args.model and name != args.model:
            continue
        own = measured.get((name, model.quant))
        rows.append(
            _row(name, model.quant, model.bits, model.size, model.source is not None, model.perplexity,
                 own.tokens_per_s if own else None)
        )  # fmt: skip
        for v in model.variants:
            e = measured.get((name, v.quant))
            rows.append(
                _row(name, v.quant, v.bits, v.size, v.source is not None, v.perplexity, e.tokens_per_s if e else None)
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _row(
    name: str, quant: str, bits: float, size: Any, has_file: bool, ppl: float | None, tps: float | None
) -> tuple[str, ...]:
    return (
        name,
        quant,
        f"{bits:g}",
        f"{int(size) / 1e6:.1f} MB" if size is not None else "-",
        f"{ppl:.3f}" if ppl is not None else "-",
        f"{tps:.1f}" if tps is not None else "-",
        "yes" if has_file else "no (planning only)",
    )
