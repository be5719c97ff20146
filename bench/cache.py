"""The response cache: quality of the exact and semantic layers, lookup latency, embedding time.

    python -m bench.cache                       # all of it (a few minutes on 2 vCPUs)
    python -m bench.cache --sizes 1000 10000    # latency at fewer sizes
    python -m bench.cache --sizes 50000 --skip-quality --concurrency 1 4   # the full lookup at 50k only
    python -m bench.cache --sizes 50000 --queries 400 --skip-quality --concurrency 1 \
        --before CHECKOUT [--before-model-dir DIR]   # side by side with another checkout, its own model build

Quality: every "a" prompt of ``bench/data/cache_pairs.jsonl`` is stored (through a real miss + result),
then every "b" prompt is looked up. A hit pair is caught when it returns its own "a"'s answer; a miss pair
(negation, opposite, swapped names, other numbers, names, units, languages, added constraints) must not
hit at all. Reported per layer, next to what cosine alone would have done and a threshold sweep.

Latency: the cache is filled to 1k, 10k and 50k entries in ONE scope (the worst case: scopes partition the
index), with clustered vectors around the real prompts' embeddings, then looked up with precomputed
vectors (embedding excluded): half near-duplicates of stored entries (hits, which also read KV), half
the benchmark's own "b" prompts. Everything runs against a real nats-server and the real model.

The full lookup, embedding included ("lookup" in the report): the "a" prompts of bench/data/cache_eval.jsonl
are stored in the same scope before the synthetic entries, then at each size ``--queries`` "b" prompts never
looked up before (each text once: the embedder keeps recent vectors) go through ``ResponseCache.lookup`` as
the actor calls it (exact get, embedding, index search, verifier, KV read of a hit, remembering a miss),
one at a time or ``--concurrency`` at once. Each part is timed where it is called (wall clock; the exact
get and the embedding may overlap), and the process's CPU clock is read around each lookup (the embedding
thread included). The process's collector is set up as the actors' runner does (``bus.runner.tune_gc``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np

from actors.cache import guard
from actors.cache.core import ResponseCache
from actors.cache.exact import ExactStore, bucket_specs
from actors.cache.index import EmbeddedIndex
from actors.cache.keys import request_keys
from actors.cache.normalize import normalize
from actors.cache.verifier import Verifier
from bus.provision import provision
from bus.runner import tune_gc
from bus.server import EmbeddedNats
from bus.service import ServiceRunner, ServiceSpec, call
from schemas.cache import CACHE_LOOKUP, CACHE_REPLY, CacheEntry, CacheLookup
from schemas.config.actors import CacheCfg, SemanticCacheCfg
from schemas.config.bus import StreamsCfg
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Sampling, make_request
from schemas.result import GenerateResult
from weights.embedder import Embedder

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "bench" / "data" / "cache_pairs.jsonl"
EVAL = REPO / "bench" / "data" / "cache_eval.jsonl"
MODEL = "smollm2-135m"


def request(text: str, **fields: Any) -> GenerateRequest:
    return make_request(
        messages=[ChatMessage(role="user", content=text)], model=MODEL, sampling=Sampling(temperature=0), **fields
    )


def answer_for(prompt: str) -> GenerateResult:
    return GenerateResult(
        request_id="x",
        text=f"answer to: {normalize(prompt)}",
        model=MODEL,
        family="smollm",
        tier="local",
        target="cpu0",
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def fill_answers(cache: ResponseCache, prompts: list[str]) -> None:
    """Store answers the way the actor does: a miss remembers the request, the result is stored.
    ``no_cache`` keeps an "a" from being answered by an earlier, similar "a": every one is stored."""
    for prompt in prompts:
        req = request(prompt, cache=CachePolicy(no_cache=True))
        reply = await cache.lookup(req)
        if reply.remembered:
            result = msgspec.structs.replace(answer_for(prompt), request_id=req.id)
            await cache.store(result, published_at=time.time())


class Same:
    """Prompts that ask the same thing: the pairs labelled "hit", joined transitively (union-find)."""

    def __init__(self, pairs: list[dict[str, Any]]) -> None:
        self.parent: dict[str, str] = {}
        for p in pairs:
            a, b = normalize(p["a"]), normalize(p["b"])
            self.parent.setdefault(a, a)
            self.parent.setdefault(b, b)
            if p["label"] == "hit":
                self.parent[self.find(a)] = self.find(b)

    def find(self, x: str) -> str:
        while self.parent.setdefault(x, x) != x:
            x = self.parent[x]
        return x

    def __call__(self, x: str, y: str) -> bool:
        return self.find(normalize(x)) == self.find(normalize(y))


async def quality(cache: ResponseCache, embedder: Embedder, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    stored = sorted({p["a"] for p in pairs})
    await fill_answers(cache, stored)
    same = Same(pairs)
    for p in pairs:
        if p["label"] == "miss" and same(p["a"], p["b"]):
            raise SystemExit(f"pair {p['id']} is labelled miss but other pairs make its prompts equivalent")
    rows = []
    for p in pairs:
        reply = await cache.lookup(request(p["b"]))
        got = reply.result.text.removeprefix("answer to: ") if reply.hit and reply.result else None
        rows.append({**p, "hit": reply.hit, "layer": reply.layer, "similarity": reply.similarity,
                     "correct": got is not None and same(got, p["b"])})  # fmt: skip
    # what cosine alone (no guard) and other thresholds would do, from the same embeddings
    for row in rows:  # why a paraphrase was missed: its cosine to its own "a", and the guard's word
        if row["label"] == "hit" and not row["hit"]:
            va, vb = embedder.embed_sync([normalize(row["a"]), normalize(row["b"])])
            row["cosine"] = round(float(va @ vb), 4)
            row["guard"] = guard.check(guard_text(row["b"]), guard_text(row["a"])).reason or "ok"
    texts_a = [normalize(p["a"]) for p in pairs]
    texts_b = [normalize(p["b"]) for p in pairs]
    unique_a = sorted(set(texts_a))
    va = embedder.embed_sync(unique_a)
    vb = embedder.embed_sync(texts_b)
    sims = vb @ va.T
    clean_a = {normalize(p["a"]): guard_text(p["a"]) for p in pairs}
    sweep = []
    for threshold in (0.80, 0.85, 0.90, 0.95, 0.97):
        for use_guard in (False, True):
            caught = false_hits = 0
            for i, p in enumerate(pairs):
                order = np.argsort(-sims[i])
                best = None
                for j in order[:4]:
                    if sims[i, j] < threshold:
                        break
                    if use_guard and not guard.check(guard_text(p["b"]), clean_a[unique_a[j]]).ok:
                        continue
                    best = unique_a[j]
                    break
                if texts_b[i] in clean_a:  # the exact layer answers before any of this
                    best = texts_b[i]
                if best is None:
                    continue
                if same(best, p["b"]):
                    caught += p["label"] == "hit"
                else:
                    false_hits += 1
            sweep.append({"threshold": threshold, "guard": use_guard, "caught": caught, "false_hits": false_hits})
    return {"rows": rows, "sweep": sweep}


def guard_text(prompt: str) -> str:
    keys = request_keys(request(prompt))
    return keys.guard_text or ""


def summarize_quality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    hit_pairs = [r for r in rows if r["label"] == "hit"]
    miss_pairs = [r for r in rows if r["label"] == "miss"]
    out: dict[str, Any] = {"pairs": len(rows), "hit_pairs": len(hit_pairs), "miss_pairs": len(miss_pairs)}
    for layer in ("exact", "semantic", "both"):
        layers = ("exact", "semantic") if layer == "both" else (layer,)
        hits = [r for r in rows if r["hit"] and r["layer"] in layers]
        correct = [r for r in hits if r["label"] == "hit" and r["correct"]]
        out[layer] = {
            "hits": len(hits),
            "correct": len(correct),
            "false_hits": len(hits) - len(correct),
            "precision": len(correct) / len(hits) if hits else 1.0,
            "hit_rate": len(correct) / len(hit_pairs) if hit_pairs else 0.0,
        }
    out["false_hits"] = [
        {k: r[k] for k in ("id", "kind", "a", "b", "layer", "similarity")}
        for r in rows
        if r["hit"] and not r["correct"]
    ]
    out["missed"] = [
        {k: r.get(k) for k in ("id", "kind", "a", "b", "cosine", "guard")} for r in hit_pairs if not r["hit"]
    ]
    out["missed_by_kind"] = dict(Counter(r["kind"] for r in hit_pairs if not r["hit"]))
    out["caught_by_kind"] = dict(Counter(r["kind"] for r in hit_pairs if r["hit"] and r["correct"]))
    return out


def embedding_times(embedder: Embedder, texts: list[str]) -> dict[str, float]:
    embedder.embed_sync(texts[:8])  # warm up
    single = []
    for text in texts:
        t = time.perf_counter()
        embedder.embed_sync([text])
        single.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    for i in range(0, len(texts), 32):
        embedder.embed_sync(texts[i : i + 32])
    batched = (time.perf_counter() - t) * 1000 / len(texts)
    return {"single_p50_ms": pct(single, 50), "single_p99_ms": pct(single, 99), "batch32_per_prompt_ms": batched}


def embedding_sides(embedders: dict[str, Any], texts: list[str]) -> dict[str, dict[str, float]]:
    """One model run per text on each side, alternating text by text (``embed_sync``: no recent vectors)."""
    times: dict[str, list[float]] = {side: [] for side in embedders}
    for text in texts:
        for side, embedder in embedders.items():
            t = time.perf_counter()
            embedder.embed_sync([text])
            times[side].append((time.perf_counter() - t) * 1000)
    return {side: {"single_p50_ms": pct(v, 50), "single_p99_ms": pct(v, 99)} for side, v in times.items()}


def synthetic(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Vectors clustered around real embeddings (cosine ~0.6-0.95 to their parent): many near neighbours."""
    parents = base[rng.integers(0, len(base), n)]
    sigma = rng.uniform(0.015, 0.06, (n, 1)).astype(np.float32)
    v = parents + sigma * rng.standard_normal((n, base.shape[1])).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def latency(
    cache: ResponseCache,
    index: EmbeddedIndex,
    base: np.ndarray,
    pairs: list[dict[str, Any]],
    sizes: list[int],
    queries: int,
    nc: Any,
    full: tuple[dict[str, ResponseCache], Parts, list[str], list[int]] | None = None,
) -> list[dict[str, Any]]:
    """``full``: the caches to compare, the part timers, the texts for full lookups (each used once) and
    the concurrencies."""
    b_texts = [p["b"] for p in pairs]
    a_texts = sorted({p["a"] for p in pairs})

    async def serve(msg: CacheLookup) -> Any:  # what the actor's service does, minus the CacheHit event
        return await cache.lookup(msg.request)

    service = ServiceRunner(nc, ServiceSpec("bench.cache.lookup", serve, CACHE_LOOKUP), owner="bench")
    await service.start()
    rng = np.random.default_rng(7)
    scope_req = make_request(  # a scope of its own: only the synthetic entries
        messages=[ChatMessage(role="user", content="latency probe")],
        model="latency-probe",
        sampling=Sampling(temperature=0),
    )
    scope = request_keys(scope_req).scope
    result = answer_for("latency probe")
    b_vectors = cache.embedder.embed_sync([normalize(t) for t in b_texts]) if cache.embedder else base
    vectors = np.empty((0, base.shape[1]), np.float32)
    out: list[dict[str, Any]] = []
    filled = 0
    for size in sizes:
        new = synthetic(base, size - filled, rng)
        now = time.time()
        for start in range(0, len(new), 500):
            chunk = range(filled + start, filled + min(start + 500, len(new)))
            await asyncio.gather(
                *(
                    cache.exact.put(
                        CacheEntry(
                            key=f"syn{i:06d}",
                            scope=scope,
                            guard_text=f"synthetic prompt {i}",
                            result=result,
                            stored_at=now,
                        )
                    )
                    for i in chunk
                )  # fmt: skip
            )
            for i in chunk:
                index._insert(_entry(f"syn{i:06d}", scope, new[i - filled], f"synthetic prompt {i}", now + 3600))
        vectors = np.concatenate([vectors, new])
        filled = size
        semantic, search, exact, served, agree = [], [], [], [], 0
        for q in range(queries):
            if q % 2 == 0:  # a near-duplicate of a stored entry: a hit, read from KV
                i = int(rng.integers(0, size))
                v = vectors[i] + 0.002 * rng.standard_normal(base.shape[1]).astype(np.float32)
                v /= np.linalg.norm(v)
                text = f"synthetic prompt {i}"
            else:
                j = int(rng.integers(0, len(b_vectors)))
                v, text = b_vectors[j], guard_text(b_texts[j])
            req = scope_req
            keys = request_keys(req)
            keys = type(keys)(key=keys.key, scope=scope, text=keys.text, guard_text=text)
            t = time.perf_counter()
            await cache.semantic_lookup(req, keys, v, t)
            semantic.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            found = index.search_sync(scope, v, threshold=0.0, limit=1, now=time.time())
            search.append((time.perf_counter() - t) * 1000)
            part = index._parts[scope]  # every point of the scope (the full lookups' prompts too)
            true_best = part.ids[int(np.argmax(part.vectors[: len(part)] @ v))]
            agree += bool(found) and found[0].id == true_best
            t = time.perf_counter()
            await cache.exact.get(f"syn{int(rng.integers(0, size)):06d}")
            exact.append((time.perf_counter() - t) * 1000)
            hit_req = CacheLookup(request=request(a_texts[int(rng.integers(0, len(a_texts)))]))
            t = time.perf_counter()
            reply = await call(nc, "bench.cache.lookup", hit_req, CACHE_REPLY)
            served.append((time.perf_counter() - t) * 1000)
            assert reply.hit and reply.layer == "exact"
        out.append({
            "entries": size,
            "semantic_p50_ms": pct(semantic, 50), "semantic_p99_ms": pct(semantic, 99),
            "index_p50_ms": pct(search, 50), "index_p99_ms": pct(search, 99),
            "exact_p50_ms": pct(exact, 50), "exact_p99_ms": pct(exact, 99),
            "service_exact_p50_ms": pct(served, 50), "service_exact_p99_ms": pct(served, 99),
            "top1_recall": agree / queries,
        })  # fmt: skip
        print(f"  {size:>6} entries: semantic lookup p50 / p99 {ms(out[-1], 'semantic')} ms")
        if full is not None:
            caches, parts, texts, concurrencies = full
            out[-1]["full"] = []
            rows: list[dict[str, Any]] = []
            out[-1]["full"] = rows
            for at_once in concurrencies:
                want = queries * len(caches)
                unseen, texts[:] = texts[:want], texts[want:]
                if len(unseen) < want:
                    raise SystemExit(f"not enough unseen prompts for {want} more full lookups")
                load_before_run = os.getloadavg()
                by_side = await full_lookups(caches, parts, unseen, at_once)
                for side, row in by_side.items():
                    rows.append({"side": side, "load_average": load_before_run, "load_after": os.getloadavg(), **row})
                    print(f"  {size:>6} entries, {side}, {at_once} at once: full lookup p50 / p99 "
                          f"{ms(row, 'lookup')} ms, CPU {ms(row, 'cpu')} ms")  # fmt: skip
    await service.stop()
    return out


class Parts:
    """Wall-clock timers around the cache's parts, installed on the instances (no change to the cache)."""

    def __init__(self, caches: list[ResponseCache]) -> None:
        self.times: dict[str, dict[str, list[float]]] = {}  # side -> part -> ms per lookup
        self.current: dict[str, dict[str, float]] = {}  # side -> part -> ms in its lookup under way
        self.side = ""  # whose lookup is under way: a part is counted for the side that called it
        cache = caches[0]
        assert cache.index is not None
        self._wrap(cache.exact, "get", "kv_get")
        self._wrap(cache.exact, "remember", "kv_remember")
        self._wrap(cache.index, "search", "index_search")
        for embedder in {id(c.embedder): c.embedder for c in caches}.values():
            self._wrap(embedder, "embed", "embedding")
        if cache.verifier is not None:
            check = cache.verifier.check

            def timed_check(*args: Any, **kw: Any) -> Any:
                t, side = time.perf_counter(), self.side
                try:
                    return check(*args, **kw)
                finally:
                    self._add(side, "verifier", t)

            cache.verifier.check = timed_check  # type: ignore[method-assign]

    def _add(self, side: str, name: str, t: float) -> None:
        mine = self.current.setdefault(side, {})
        mine[name] = mine.get(name, 0.0) + (time.perf_counter() - t) * 1000

    def _wrap(self, obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        async def timed(*args: Any, **kw: Any) -> Any:
            t, side = time.perf_counter(), self.side
            try:
                return await fn(*args, **kw)
            finally:
                self._add(side, name, t)

        setattr(obj, attr, timed)

    def flush(self, side: str) -> None:
        """End of one lookup: each part's time in it (summed when called more than once; a part that ends
        after its lookup returned, such as a pending put off the lookup's path, counts with the next one)."""
        for name, ms in self.current.pop(side, {}).items():
            self.times.setdefault(side, {}).setdefault(name, []).append(ms)


async def full_lookups(
    caches: dict[str, ResponseCache], parts: Parts, texts: list[str], concurrency: int
) -> dict[str, dict[str, Any]]:
    """``ResponseCache.lookup`` of each text in the probe scope: wall and CPU time per lookup, per part.
    With two caches (``--before``), groups of ``concurrency`` lookups alternate between them."""
    parts.times, parts.current = {}, {}
    sides = list(caches)
    wall: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    layers: dict[str, Counter[str]] = {side: Counter() for side in sides}
    for n, start in enumerate(range(0, len(texts), concurrency)):
        side = parts.side = sides[n % len(sides)]
        group = [probe_request(t) for t in texts[start : start + concurrency]]

        async def one(req: GenerateRequest, side: str = side) -> None:
            t = time.perf_counter()
            reply = await caches[side].lookup(req)
            wall[side].append((time.perf_counter() - t) * 1000)
            layers[side][reply.layer or "miss"] += 1

        c = time.process_time()
        await asyncio.gather(*(one(r) for r in group))
        cpu[side].extend([(time.process_time() - c) * 1000 / len(group)] * len(group))
        if concurrency == 1:
            parts.flush(side)
    out = {}
    for side in sides:
        row = {"concurrency": concurrency, "lookups": len(wall[side]), "layers": dict(layers[side]),
               "lookup_p50_ms": pct(wall[side], 50), "lookup_p99_ms": pct(wall[side], 99),
               "cpu_p50_ms": pct(cpu[side], 50), "cpu_p99_ms": pct(cpu[side], 99)}  # fmt: skip
        for name, values in parts.times.get(side, {}).items():
            row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = pct(values, 50), pct(values, 99)
            row[f"{name}_calls"] = len(values)
        out[side] = row
    parts.times, parts.current = {}, {}
    return out


def load_before(root: Path) -> tuple[Any, Any]:
    """``ResponseCache`` and ``Embedder`` of another checkout of this repository (the code before a change),
    loaded beside this one's: its weights/minilm.py (the model it builds) and its embedder come with it;
    everything else they import is this checkout's."""
    import importlib.util

    def load(name: str, path: Path) -> Any:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
        spec.loader.exec_module(module)
        return module

    mine = sys.modules["weights.minilm"]
    sys.modules["weights.minilm"] = load("before_minilm", root / "weights" / "minilm.py")
    try:  # the embedder moved from actors/cache/ to weights/
        embedder = root / "weights" / "embedder.py"
        embedder = embedder if embedder.is_file() else root / "actors" / "cache" / "embedder.py"
        before_embedder = load("before_embedder", embedder)
    finally:
        sys.modules["weights.minilm"] = mine
    return load("before_core", root / "actors" / "cache" / "core.py").ResponseCache, before_embedder.Embedder


def probe_request(text: str, **fields: Any) -> GenerateRequest:
    """A request in the latency probe's scope (the scope follows the model and the sampling)."""
    return make_request(
        messages=[ChatMessage(role="user", content=text)],
        model="latency-probe",
        sampling=Sampling(temperature=0),
        **fields,
    )


def eval_texts() -> tuple[list[str], list[str]]:
    """The eval set's "a" prompts (stored) and its "b" prompts that are not also an "a" (looked up)."""
    rows = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]
    stored = sorted({r["a"] for r in rows})
    seen = {normalize(t) for t in stored}
    asked = []
    for r in rows:
        if normalize(r["b"]) not in seen:
            seen.add(normalize(r["b"]))
            asked.append(r["b"])
    return stored, asked


def _entry(id_: str, scope: str, vector: np.ndarray, text: str, expires_at: float) -> Any:
    from actors.cache.index import IndexEntry

    return IndexEntry(id=id_, scope=scope, vector=vector, text=text, expires_at=expires_at)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} vCPU ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    server = EmbeddedNats(store_dir=work / "nats", port=0).start()
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream(timeout=10)
        await provision(js, StreamsCfg(history=3600, storage="file"), streams=[], buckets=bucket_specs(3600, 600))
        t = time.perf_counter()
        embedder = Embedder.load(args.model_dir)
        load_s = time.perf_counter() - t
        semantic = SemanticCacheCfg(threshold=args.threshold, verifier=args.verifier)
        cfg = CacheCfg(max_entries=max(args.sizes) + 10_000, semantic=semantic)
        index = EmbeddedIndex.open(work / "index")
        verifier = Verifier.load() if args.verifier else None
        cache = ResponseCache(cfg, await ExactStore.open(js), index, embedder, verifier=verifier)
        q: dict[str, Any] = {"rows": [], "sweep": []}
        if args.quality:
            print(f"quality on {len(pairs)} labelled pairs (threshold {args.threshold}) ...")
            q = await quality(cache, embedder, pairs)
        else:  # the exact hits through the service below ask for these
            await fill_answers(cache, sorted({p["a"] for p in pairs}))
        summary = summarize_quality(q["rows"])
        texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
        print(f"embedding time over {len(texts)} prompts ...")
        emb = embedding_times(embedder, [normalize(t) for t in texts])
        base = embedder.embed_sync([normalize(t) for t in texts])
        full = None
        if args.concurrency:
            stored, asked = eval_texts()
            print(f"storing {len(stored)} prompts for the full lookups ...")
            for text in stored:
                req = probe_request(text, cache=CachePolicy(no_cache=True))
                if (await cache.lookup(req)).remembered:
                    await cache.store(
                        msgspec.structs.replace(answer_for(text), request_id=req.id), published_at=time.time()
                    )
            caches = {"this": cache}
            if args.before is not None:
                before_cache, before_embedder = load_before(args.before)
                old = before_embedder.load(args.before_model_dir or work / "minilm-before")
                print(f"embedding alone, before and this alternating, over {len(texts)} prompts ...")
                emb["sides"] = embedding_sides({"before": old, "this": embedder}, [normalize(t) for t in texts])
                caches = {"before": before_cache(cfg, cache.exact, index, old, verifier=verifier), "this": cache}
            full = (caches, Parts(list(caches.values())), asked, args.concurrency)
        tune_gc()  # as the actors' runner does once an actor has started
        print(f"lookup latency at {args.sizes} entries, {args.queries} lookups each ...")
        lat = await latency(cache, index, base, pairs, args.sizes, args.queries, nc, full)
        await cache.drain()  # the last misses' pending puts
        await index.close()
        return {
            "machine": machine(),
            "code": str(REPO),
            "load_average": load,
            "load_average_end": os.getloadavg(),
            "threshold": args.threshold,
            "model_load_s": load_s,
            "quality": summary,
            "sweep": q["sweep"],
            "embedding": emb,
            "latency": lat,
            "at": time.time(),
        }
    finally:
        await nc.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def ms(row: dict[str, Any], name: str) -> str:
    return f"{row[name + '_p50_ms']:.2f} / {row[name + '_p99_ms']:.2f}"


def print_report(r: dict[str, Any]) -> None:
    q = r["quality"]
    print(f"\nmachine: {r['machine']}; load average at the start {r['load_average'][0]:.2f}")
    print(
        f"pairs: {q['pairs']} ({q['hit_pairs']} should hit, {q['miss_pairs']} must not); threshold {r['threshold']}\n"
    )
    print("| layer | hits | correct | false hits | precision | hit rate (of pairs that should hit) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for layer in ("exact", "semantic", "both"):
        s = q[layer]
        cells = [layer, s["hits"], s["correct"], s["false_hits"], f"{s['precision']:.3f}", f"{s['hit_rate']:.3f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\ncaught by kind: {q['caught_by_kind']}; missed: {q['missed_by_kind']}")
    for m in q["missed"]:
        print(f"missed #{m['id']} (cosine {m['cosine']}, guard: {m['guard']}): {m['a']!r} -> {m['b']!r}")
    for fh in q["false_hits"]:
        print(f"FALSE HIT #{fh['id']} ({fh['kind']}, {fh['layer']} {fh['similarity']}): {fh['a']!r} -> {fh['b']!r}")
    print("\n| threshold | cosine only: caught / false hits | with the guard: caught / false hits |")
    print("| ---: | ---: | ---: |")
    by = {(s["threshold"], s["guard"]): s for s in r["sweep"]}
    for t in sorted({s["threshold"] for s in r["sweep"]}):
        a, b = by[(t, False)], by[(t, True)]
        print(f"| {t:.2f} | {a['caught']} / {a['false_hits']} | {b['caught']} / {b['false_hits']} |")
    e = r["embedding"]
    print(
        f"\nembedding: {e['single_p50_ms']:.1f} ms p50, {e['single_p99_ms']:.1f} ms p99 per prompt alone; "
        f"{e['batch32_per_prompt_ms']:.2f} ms per prompt in batches of 32; model load {r['model_load_s']:.1f} s"
    )
    for side, t in e.get("sides", {}).items():
        print(f"embedding alone, {side} (alternating): {t['single_p50_ms']:.2f} ms p50, {t['single_p99_ms']:.2f} p99")
    print(
        "\n| entries | semantic lookup p50 / p99 (ms) | index search p50 / p99 (ms) | KV get p50 / p99 (ms) "
        "| exact hit via the service p50 / p99 (ms) | top-1 recall |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in r["latency"]:
        cells = [row["entries"], ms(row, "semantic"), ms(row, "index"), ms(row, "exact"), ms(row, "service_exact")]
        print("| " + " | ".join(str(c) for c in cells) + f" | {row['top1_recall']:.3f} |")
    full = [(row["entries"], f) for row in r["latency"] for f in row.get("full", [])]
    if full:
        names = ("lookup", "cpu", "kv_get", "embedding", "index_search", "verifier", "kv_remember")
        print("\nfull lookups, embedding included (p50 / p99 ms; parts per lookup, wall clock):")
        print("| entries | code | at once | load | " + " | ".join(names) + " | layers |")
        print("| ---: | --- | ---: | ---: |" + " ---: |" * len(names) + " --- |")
        for entries, f in full:
            cells = [ms(f, n) if f"{n}_p50_ms" in f else "" for n in names]
            load = f"{f['load_average'][0]:.1f}"
            head = f"| {entries} | {f.get('side', 'this')} | {f['concurrency']} | {load} | "
            print(head + " | ".join(cells) + f" | {f['layers']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--queries", type=int, default=400, help="lookups per size")
    parser.add_argument("--threshold", type=float, default=0.95, help="cosine needed with --no-verifier")
    parser.add_argument("--no-verifier", dest="verifier", action="store_false", help="hard refusals only")
    parser.add_argument("--model-dir", type=Path, default=REPO / ".data" / "minilm", help="built on first use")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--before", type=Path, help="another checkout (the code before a change): full lookups alternate with it"
    )
    parser.add_argument(
        "--before-model-dir", type=Path, help="the model folder the --before checkout builds (default: a temp one)"
    )
    parser.add_argument("--skip-quality", dest="quality", action="store_false", help="latency only")
    parser.add_argument(
        "--concurrency", type=int, nargs="*", default=[1], help="full lookups (embedding included) this many at once"
    )
    args = parser.parse_args(argv)
    args.sizes = sorted(args.sizes)
    report = asyncio.run(run(args))
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cache-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
