"""The cache's quality on the labelled sets, per part and per category, through the real cache.

    python -m bench.cache_quality                      # dev, test and the independent mini-set (minutes)
    python -m bench.cache_quality --no-verifier        # cosine >= --threshold + hard refusals only
    python -m bench.cache_quality --parts independent  # one part
    python -m bench.cache_quality --parts dev --steps 0.90 0.95 0.97 --model-dir DIR   # tuning: dev only

Every prompt goes through a real ``ResponseCache`` (nats-server, JetStream KV, the embedded index, MiniLM):
each "a" is stored through a real miss and its result, then each "b" is looked up. Two protocols:

    shared    all "a"s of a part in one scope: a "b" may be answered by any stored prompt, so a hit is
              correct only when it returns the answer of a prompt that means the same (labelled hit pairs,
              the rows' ``ma`` / ``mb`` meanings and cache_same.json, joined transitively)
    pairwise  each pair in a scope of its own (as the outside held-out set is run): "b" can only meet its "a"

Parts: ``dev`` and ``test`` of bench/data/cache_eval.jsonl (tune on dev only; test is scored once per
change) and ``independent`` (bench/data/cache_independent.jsonl: written apart, never used for tuning).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import nats

from actors.cache.core import ResponseCache
from actors.cache.exact import ExactStore, bucket_specs
from actors.cache.index import EmbeddedIndex
from actors.cache.lexicon import Lexicon
from actors.cache.normalize import normalize
from actors.cache.verifier import STEPS, Verifier
from bench.cache import REPO, answer_for, machine
from bus.provision import provision
from bus.server import EmbeddedNats
from schemas.config.actors import CacheCfg, SemanticCacheCfg
from schemas.config.bus import StreamsCfg
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Sampling, make_request
from weights.embedder import Embedder

DATA = REPO / "bench" / "data"
EVAL, INDEPENDENT = DATA / "cache_eval.jsonl", DATA / "cache_independent.jsonl"
PARTS = {"dev": EVAL, "test": EVAL, "independent": INDEPENDENT}


class Same:
    """Prompts that mean the same: hit pairs, the rows' meanings and cache_same.json, joined (union-find)."""

    def __init__(self, pairs: list[dict[str, Any]]) -> None:
        self.parent: dict[str, str] = {}
        for p in pairs:
            if p["label"] == "hit":
                self.join(p["a"], p["b"])
            for text, meaning in ((p["a"], p.get("ma")), (p["b"], p.get("mb"))):
                if meaning:
                    self.join(text, f"\0{meaning}")
        for group in json.loads((DATA / "cache_same.json").read_text()):
            for text in group[1:]:
                self.join(group[0], text)

    def find(self, x: str) -> str:
        x = normalize(x) if not x.startswith("\0") else x
        while self.parent.setdefault(x, x) != x:
            x = self.parent[x]
        return x

    def join(self, x: str, y: str) -> None:
        self.parent[self.find(x)] = self.find(y)

    def __call__(self, x: str, y: str) -> bool:
        return self.find(x) == self.find(y)


def ask(text: str, scope: str, **fields: Any) -> GenerateRequest:
    """A request whose scope is ``scope`` (the model name is part of the scope)."""
    return make_request(
        messages=[ChatMessage(role="user", content=text)], model=scope, sampling=Sampling(temperature=0), **fields
    )


async def store(cache: ResponseCache, text: str, scope: str) -> None:
    req = ask(text, scope, cache=CachePolicy(no_cache=True))  # every "a" is stored, none answered by another
    reply = await cache.lookup(req)
    if reply.remembered:
        await cache.store(msgspec.structs.replace(answer_for(text), request_id=req.id), published_at=time.time())


async def measure(cache: ResponseCache, pairs: list[dict[str, Any]], pairwise: bool, tag: str) -> list[dict[str, Any]]:
    same = Same(pairs)
    scope_of = {p["id"]: f"{tag}-{p['id']}" if pairwise else tag for p in pairs}
    stored: set[tuple[str, str]] = set()
    for p in pairs:
        if (p["a"], scope_of[p["id"]]) not in stored:
            stored.add((p["a"], scope_of[p["id"]]))
            await store(cache, p["a"], scope_of[p["id"]])
    rows = []
    for p in pairs:
        reply = await cache.lookup(ask(p["b"], scope_of[p["id"]]))
        got = reply.result.text.removeprefix("answer to: ") if reply.hit and reply.result else None
        rows.append({**p, "hit": reply.hit, "layer": reply.layer, "similarity": reply.similarity,
                     "correct": got is not None and same(got, p["b"]), "got": got})  # fmt: skip
    return rows


def per_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for r in rows:
        k = out.setdefault(r["kind"], Counter())
        k["pairs"] += 1
        k["label_hit"] += r["label"] == "hit"
        k["caught"] += r["label"] == "hit" and r["hit"] and r["correct"]
        k["exact"] += r["label"] == "hit" and r["hit"] and r["correct"] and r["layer"] == "exact"
        k["false_hits"] += r["hit"] and not r["correct"]
    return {kind: dict(c) for kind, c in sorted(out.items())}


def load_part(part: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in PARTS[part].read_text().splitlines() if line.strip()]
    if part in ("dev", "test"):
        return [r for r in rows if r["split"] == part]
    return [{**r, "id": i} for i, r in enumerate(rows)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-cache-quality-"))
    server = EmbeddedNats(store_dir=work / "nats", port=0).start()
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream(timeout=10)
        await provision(js, StreamsCfg(history=3600, storage="file"), streams=[], buckets=bucket_specs(3600, 600))
        embedder = Embedder.load(args.model_dir)
        verifier = Verifier(Lexicon.load(), tuple(args.steps)) if args.verifier else None
        cfg = CacheCfg(semantic=SemanticCacheCfg(threshold=args.threshold, verifier=args.verifier))
        index = EmbeddedIndex.open(work / "index")
        cache = ResponseCache(cfg, await ExactStore.open(js), index, embedder, verifier=verifier)
        out: dict[str, Any] = {
            "machine": machine(),
            "verifier": args.verifier,
            "threshold": args.threshold,
            "steps": args.steps,
        }
        for part in args.parts:
            pairs = load_part(part)
            for protocol in args.protocols:
                print(f"{part} / {protocol}: {len(pairs)} pairs ...", flush=True)
                rows = await measure(cache, pairs, protocol == "pairwise", f"eval-{part}-{protocol}")
                out[f"{part}/{protocol}"] = {
                    "kinds": per_kind(rows),
                    "wrong": [
                        {k: r[k] for k in ("id", "kind", "label", "a", "b", "got", "similarity")}
                        for r in rows
                        if r["hit"] and not r["correct"]
                    ],  # fmt: skip
                }
        await cache.drain()  # the last misses' pending puts
        await index.close()
        return out
    finally:
        await nc.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_report(r: dict[str, Any]) -> None:
    print(f"\nmachine: {r['machine']}; verifier {'on' if r['verifier'] else 'off, threshold ' + str(r['threshold'])}")
    for name, part in r.items():
        if "/" not in name:
            continue
        kinds = part["kinds"]
        hits = {k: v for k, v in kinds.items() if v["label_hit"]}
        misses = {k: v for k, v in kinds.items() if not v["label_hit"]}
        caught, total = sum(v["caught"] for v in hits.values()), sum(v["label_hit"] for v in hits.values())
        false, near = sum(v["false_hits"] for v in kinds.values()), sum(v["pairs"] for v in misses.values())
        print(f"\n{name}: {caught} / {total} rewordings hit ({caught / max(1, total):.1%}); {false} false hits "
              f"({near} near-misses)")  # fmt: skip
        print("| rewording | hit / pairs (exact layer) | near-miss | false hits / pairs |\n| --- | ---: | --- | ---: |")
        h, m = list(hits.items()), list(misses.items())
        for i in range(max(len(h), len(m))):
            left = (
                f"{h[i][0]} | {h[i][1]['caught']} / {h[i][1]['label_hit']} ({h[i][1]['exact']})"
                if i < len(h)
                else " | "
            )
            right = f"{m[i][0]} | {m[i][1]['false_hits']} / {m[i][1]['pairs']}" if i < len(m) else " | "
            print(f"| {left} | {right} |")
        for w in part["wrong"]:
            print(f"WRONG #{w['id']} ({w['label']} {w['kind']}, {w['similarity']}): {w['b']!r} got {w['got']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["dev", "test", "independent"], choices=sorted(PARTS))
    parser.add_argument("--protocols", nargs="+", default=["shared", "pairwise"], choices=["shared", "pairwise"])
    parser.add_argument("--no-verifier", dest="verifier", action="store_false")
    parser.add_argument("--threshold", type=float, default=0.95, help="cosine needed without the verifier")
    parser.add_argument(
        "--steps", type=float, nargs="+", default=list(STEPS), help="the verifier's steps (tune on dev only)"
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / ".data" / "minilm", help="built on first use")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cache-quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
