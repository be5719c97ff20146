"""Does the ensemble's consensus separate agreeing from contradicting answers? Precision/recall of "agree".

    python -m bench.consensus_eval [--model-dir DIR] [--json OUT]

Reads bench/data/consensus_pairs.jsonl (hand-written answer pairs: prose, numeric, code; each labelled
agree / contradict and fixed to a dev, test or holdout split). Every pair is judged exactly as the router judges
an ensemble: MiniLM vectors of the same (truncated) texts, the sandbox running code answers on the
examples in the prompt, then policy.consensus.vote.judge. The thresholds (prose cosine, code
cosine) are chosen on the dev split only (best F1 of "agree"); test and holdout are scored with them.
The holdout pairs were written after the checks were last changed and scored once, blind (docs/benchmarks.md).
For comparison it also scores the router's former measure (word overlap >= 0.5) and embeddings alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.router.sandbox import run_candidates
from policy.consensus import code as codecheck
from policy.consensus import prose
from policy.consensus.vote import Candidate, Thresholds, candidate, cosine, embed_text, judge

DATA = Path(__file__).resolve().parent / "data" / "consensus_pairs.jsonl"
SPLITS = ("dev", "test", "holdout")
GRID = [round(0.30 + 0.02 * i, 2) for i in range(36)] + [1.01]  # 0.30 .. 1.00, and 1.01: "never"


@dataclass
class Pair:
    id: str
    kind: str
    split: str
    agree: bool
    a: Candidate
    b: Candidate
    examples: list[str]


def score(predicted: list[bool], truth: list[bool]) -> dict[str, float]:
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    tn = len(truth) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(truth), "precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / len(truth)}


SANDBOX_MS: list[float] = []  # one run_candidates call (two candidates side by side), milliseconds


async def load(embedder: Any) -> list[Pair]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    texts = [embed_text(t) for r in rows for t in (r["a"], r["b"])]
    vectors = await embedder.embed(texts)
    pairs = []
    for i, r in enumerate(rows):
        examples = codecheck.examples_of(r["prompt"])
        behaviour: list[list[str] | None] = [None, None]
        codes = [codecheck.code_of(r["a"]), codecheck.code_of(r["b"])]
        if examples and all(codes):
            started = time.perf_counter()
            runs = await run_candidates([c for c in codes if c], examples)
            SANDBOX_MS.append((time.perf_counter() - started) * 1000)
            behaviour = [run.results for run in runs]
        a = candidate(r["a"], vector=vectors[2 * i].tolist(), behaviour=behaviour[0])
        b = candidate(r["b"], vector=vectors[2 * i + 1].tolist(), behaviour=behaviour[1])
        pairs.append(Pair(r["id"], r["kind"], r["split"], r["label"] == "agree", a, b, examples))
    return pairs


def tune(dev: list[Pair]) -> Thresholds:
    def f1(th: Thresholds, kinds: set[str]) -> float:
        chosen = [p for p in dev if p.kind in kinds]
        return score([judge(p.a, p.b, p.examples, th).agree for p in chosen], [p.agree for p in chosen])["f1"]

    best_prose = max(GRID, key=lambda t: (f1(Thresholds(prose=t), {"prose", "numeric"}), -abs(t - 0.7)))
    best_code = max(GRID, key=lambda t: (f1(Thresholds(prose=best_prose, code=t), {"code"}), -abs(t - 0.9)))
    return Thresholds(prose=best_prose, code=best_code)


def report(pairs: list[Pair], th: Thresholds, dev_th_embed: float) -> dict[str, Any]:
    out: dict[str, Any] = {"thresholds": {"prose": th.prose, "code": th.code, "embedding_only": dev_th_embed}}
    for split in SPLITS:
        part = [p for p in pairs if p.split == split]
        for kind in ("prose", "numeric", "code", "all"):
            chosen = [p for p in part if kind == "all" or p.kind == kind]
            truth = [p.agree for p in chosen]
            out[f"{split}/{kind}"] = {
                "consensus": score([judge(p.a, p.b, p.examples, th).agree for p in chosen], truth),
                "word_overlap": score([prose.lexical_similarity(p.a.text, p.b.text) >= 0.5 for p in chosen], truth),
                "embedding_only": score([_cos(p) >= dev_th_embed for p in chosen], truth),
            }
        out[f"{split}/errors"] = [
            f"{p.id} ({'agree' if p.agree else 'contradict'}): {v.method} {v.reason}"
            for p in part
            if (v := judge(p.a, p.b, p.examples, th)).agree != p.agree
        ]
    return out


def _cos(p: Pair) -> float:
    assert p.a.vector is not None and p.b.vector is not None
    return cosine(p.a.vector, p.b.vector)


def table(result: dict[str, Any]) -> str:
    lines = [
        "| split / kind | n | consensus P / R / F1 | word overlap P / R / F1 | embedding only P / R / F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, value in result.items():
        if not isinstance(value, dict) or "consensus" not in value:
            continue
        cells = [
            f"{value[m]['precision']:.2f} / {value[m]['recall']:.2f} / {value[m]['f1']:.2f}"
            for m in ("consensus", "word_overlap", "embedding_only")
        ]
        lines.append(f"| {key} | {value['consensus']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from weights.embedder import Embedder
    from weights.minilm import build_model

    model_dir = args.model_dir or build_model(Path(tempfile.mkdtemp(prefix="orch-minilm-")) / "minilm")
    embedder = Embedder.load(model_dir)
    try:
        pairs = await load(embedder)
    finally:
        embedder.close()
    dev = [p for p in pairs if p.split == "dev"]
    th = tune(dev)
    embed_only = max(GRID, key=lambda t: score([_cos(p) >= t for p in dev], [p.agree for p in dev])["f1"])
    result = report(pairs, th, embed_only)
    judge_us = []
    for p in pairs:
        started = time.perf_counter()
        judge(p.a, p.b, p.examples, th)
        judge_us.append((time.perf_counter() - started) * 1e6)
    result["timing"] = {
        "judge_us_median": round(statistics.median(judge_us), 1),
        "sandbox_pair_ms_median": round(statistics.median(SANDBOX_MS), 1) if SANDBOX_MS else None,
        "sandbox_runs": len(SANDBOX_MS),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consensus_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="a built MiniLM folder (else built in a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the full result here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result["thresholds"]), json.dumps(result["timing"]))
    print(table(result))
    for split in SPLITS:
        print(f"\n{split} errors:")
        for line in result[f"{split}/errors"]:
            print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
