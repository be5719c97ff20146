"""Why the embedded vector index is numpy with a binary prefilter: the candidates, measured side by side.

    python -m bench.cache_backends --n 50000          # all candidates (about 4 minutes on 2 vCPUs)
    python -m bench.cache_backends --n 50000 --only numpy binary

Every candidate holds ``n`` random unit vectors (384 dimensions) in ONE scope (the worst case) and answers
200 nearest-neighbour queries (a stored vector plus noise, threshold 0.9, 4 results):

    qdrant-local     qdrant-client's local mode (path=...), one collection per scope, no payload filter
    qdrant-local-f   the same with the scope as a payload filter (one collection for all scopes)
    edge-plain       qdrant-edge (pip install qdrant-edge-py), keyword payload index, no HNSW built
    edge-hnsw        qdrant-edge after optimize() built its HNSW index; how long optimize() holds the GIL
    numpy            float32 matrix, exact scan
    binary           actors.cache.index.EmbeddedIndex: sign-bit codes, Hamming prefilter, exact re-score
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from actors.cache.index import EmbeddedIndex, IndexEntry

DIM = 384
QUERIES = 200


def pct(ts: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(ts) * 1000, q))


def measure(query: Callable[[np.ndarray], Any], queries: np.ndarray) -> dict[str, float]:
    query(queries[0])
    ts = []
    for q in queries:
        t = time.perf_counter()
        query(q)
        ts.append(time.perf_counter() - t)
    return {"p50_ms": pct(ts, 50), "p99_ms": pct(ts, 99)}


def gil_stall(work: Callable[[], Any]) -> tuple[float, float]:
    """Run ``work`` in a thread; return (its duration, the longest gap the main thread could not run)."""
    done = threading.Event()
    took = [0.0]

    def run() -> None:
        t = time.monotonic()
        work()
        took[0] = time.monotonic() - t
        done.set()

    thread = threading.Thread(target=run)
    last = time.monotonic()
    gap = 0.0
    thread.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.monotonic()
        gap, last = max(gap, now - last), now
    thread.join()
    return took[0], gap


def qdrant_local(vectors: np.ndarray, queries: np.ndarray, work: Path, with_filter: bool) -> dict[str, Any]:
    import warnings

    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    warnings.simplefilter("ignore")  # local mode warns above 20k points: that is the point being measured
    client = QdrantClient(path=str(work / ("qf" if with_filter else "q")))
    client.create_collection("c", vectors_config=m.VectorParams(size=DIM, distance=m.Distance.COSINE))
    t = time.monotonic()
    for i in range(0, len(vectors), 1000):
        batch = [
            m.PointStruct(id=j, vector=vectors[j].tolist(), payload={"scope": "s"})
            for j in range(i, min(len(vectors), i + 1000))
        ]
        client.upsert("c", batch)
    fill = time.monotonic() - t
    flt = m.Filter(must=[m.FieldCondition(key="scope", match=m.MatchValue(value="s"))]) if with_filter else None
    out = measure(
        lambda q: client.query_points("c", query=q.tolist(), limit=4, query_filter=flt, score_threshold=0.9), queries
    )
    client.close()
    return {**out, "fill_s": fill}


def edge(vectors: np.ndarray, queries: np.ndarray, work: Path, hnsw: bool) -> dict[str, Any]:
    import qdrant_edge as e

    index = e.HnswIndexConfig(m=16, ef_construct=64, full_scan_threshold=10000, max_indexing_threads=1)
    cfg = e.EdgeConfig(
        vectors=e.EdgeVectorParams(size=DIM, distance=e.Distance.Cosine), hnsw_config=index, max_search_threads=1
    )
    shard = e.EdgeShard.create(str(work / ("eh" if hnsw else "ep")), cfg)
    shard.update(e.UpdateOperation.create_field_index("scope", e.PayloadSchemaType.Keyword))
    t = time.monotonic()
    for i in range(0, len(vectors), 1000):
        points = [e.Point(j, vectors[j].tolist(), {"scope": "s"}) for j in range(i, min(len(vectors), i + 1000))]
        shard.update(e.UpdateOperation.upsert_points(points))
    shard.flush()
    out: dict[str, Any] = {"fill_s": time.monotonic() - t}
    if hnsw:
        out["optimize_s"], out["gil_stall_s"] = gil_stall(shard.optimize)
    flt = e.Filter(must=[e.FieldCondition(key="scope", match=e.MatchValue("s"))])
    out.update(
        measure(
            lambda q: shard.query(
                e.QueryRequest(limit=4, query=e.Query.Nearest(q.tolist()), filter=flt, score_threshold=0.9)
            ),
            queries,
        )
    )
    shard.close()
    return out


def numpy_scan(vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    def query(q: np.ndarray) -> np.ndarray:
        sims = vectors @ q
        top = np.argpartition(-sims, 4)[:4]
        return top[sims[top] >= 0.9]

    return measure(query, queries)


def binary(vectors: np.ndarray, queries: np.ndarray, work: Path) -> dict[str, Any]:
    index = EmbeddedIndex.open(work / "b")
    t = time.monotonic()
    for i, v in enumerate(vectors):
        index._insert(IndexEntry(id=str(i), scope="s", vector=v, text=None, expires_at=time.time() + 3600))
    fill = time.monotonic() - t
    out = measure(lambda q: index.search_sync("s", q, threshold=0.9, limit=4, now=time.time()), queries)
    return {**out, "fill_s": fill}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_backends", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    names = ["qdrant-local", "qdrant-local-f", "edge-plain", "edge-hnsw", "numpy", "binary"]
    parser.add_argument("--only", nargs="+", choices=names, default=names)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, args.n, QUERIES)] + 0.01 * rng.standard_normal((QUERIES, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    results: dict[str, Any] = {}
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "qdrant-local": lambda: qdrant_local(vectors, queries, work, False),
        "qdrant-local-f": lambda: qdrant_local(vectors, queries, work, True),
        "edge-plain": lambda: edge(vectors, queries, work, False),
        "edge-hnsw": lambda: edge(vectors, queries, work, True),
        "numpy": lambda: numpy_scan(vectors, queries),
        "binary": lambda: binary(vectors, queries, work),
    }
    try:
        for name in args.only:
            try:
                results[name] = runs[name]()
            except ImportError as exc:
                results[name] = {"skipped": str(exc)}
            print(name, json.dumps(results[name]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| candidate ({args.n} points, one scope) | query p50 / p99 (ms) | notes |")
    print("| --- | ---: | --- |")
    for name, r in results.items():
        if "skipped" in r:
            print(f"| {name} | - | skipped: {r['skipped']} |")
            continue
        notes = f"fill {r['fill_s']:.1f} s" if "fill_s" in r else ""
        if "optimize_s" in r:
            notes += f"; optimize() {r['optimize_s']:.1f} s, main thread stalled {r['gil_stall_s']:.1f} s"
        print(f"| {name} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {notes} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cache-backends-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
