"""The vector index behind the semantic layer: the embedded one (numpy + SQLite) and QdrantIndex, the
production path, run here on qdrant-client's local mode (same client API; no Qdrant server runs here)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from actors.cache.errors import StoreError
from actors.cache.index import EmbeddedIndex, IndexEntry, QdrantIndex, VectorIndex

DIM = 384


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.01) -> np.ndarray:
    w = v + noise * rng.standard_normal(DIM).astype(np.float32)
    return w / np.linalg.norm(w)


def entry(id_: str, vector: np.ndarray, scope: str = "s1", ttl: float = 3600.0) -> IndexEntry:
    return IndexEntry(id=id_, scope=scope, vector=vector, text=f"text of {id_}", expires_at=time.time() + ttl)


@pytest.fixture(params=["embedded", "qdrant"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    if request.param == "embedded":
        idx: VectorIndex = EmbeddedIndex.open(tmp_path / "index")
    else:
        idx = await QdrantIndex.connect(url=None, location=":memory:", collection="test_cache")
    yield idx
    await idx.close()


async def test_search_returns_the_closest_point_of_the_scope_above_the_threshold(index: VectorIndex) -> None:
    """Best first, only points at or above the threshold, never from another scope."""
    rng = np.random.default_rng(1)
    a, b, c = unit(rng, 3)
    await index.add(entry("a", a))
    await index.add(entry("b", b))
    await index.add(entry("c-other-scope", near(a, rng), scope="s2"))
    found = await index.search("s1", near(a, rng), threshold=0.9, limit=4, now=time.time())
    assert [x.id for x in found] == ["a"] and found[0].score > 0.9 and found[0].text == "text of a"
    assert await index.search("s1", c, threshold=0.9, limit=4, now=time.time()) == []
    assert await index.search("nowhere", a, threshold=0.5, limit=4, now=time.time()) == []
    assert await index.count() == 3


async def test_expired_points_are_not_found_and_are_swept(index: VectorIndex) -> None:
    """A point past its expiry is invisible to search and removed by expire()."""
    rng = np.random.default_rng(2)
    (a,) = unit(rng)
    await index.add(entry("old", a, ttl=-1))
    await index.add(entry("new", near(a, rng, 0.02)))
    found = await index.search("s1", a, threshold=0.5, limit=4, now=time.time())
    assert [x.id for x in found] == ["new"]
    assert await index.expire(time.time()) == 1
    assert await index.count() == 1


async def test_delete_and_upsert_by_id(index: VectorIndex) -> None:
    """Adding an id again replaces its vector; deleted ids are gone."""
    rng = np.random.default_rng(3)
    a, b = unit(rng, 2)
    await index.add(entry("x", a))
    await index.add(entry("x", b))
    assert await index.count() == 1
    assert [f.id for f in await index.search("s1", b, threshold=0.99, limit=2, now=time.time())] == ["x"]
    await index.delete(["x", "never-there"])
    assert await index.count() == 0


async def test_embedded_index_survives_a_restart(tmp_path: Path) -> None:
    """Points are in SQLite: a reopened index finds them; expired ones are dropped on open."""
    rng = np.random.default_rng(4)
    a, b = unit(rng, 2)
    first = EmbeddedIndex.open(tmp_path / "idx")
    await first.add(entry("keep", a))
    await first.add(entry("gone", b, ttl=-1))
    await first.close()
    second = EmbeddedIndex.open(tmp_path / "idx")
    assert await second.ids() == {"keep"}
    found = await second.search("s1", near(a, rng), threshold=0.9, limit=1, now=time.time())
    assert found[0].id == "keep"
    await second.close()
    with pytest.raises(StoreError, match="closed"):
        await second.add(entry("late", a))


async def test_binary_prefilter_finds_what_an_exact_scan_finds(tmp_path: Path) -> None:
    """Above exact_max the index compares 48-byte sign codes first, then re-scores: same top hit."""
    rng = np.random.default_rng(5)
    parents = unit(rng, 50)
    idx = EmbeddedIndex.open(tmp_path / "x", exact_max=100, candidates=32)
    vectors = np.stack([near(parents[i % 50], rng, 0.04) for i in range(3000)])  # dense clusters
    for i, v in enumerate(vectors):
        idx._insert(entry(f"p{i}", v))
    misses = 0
    for _ in range(200):
        target = int(rng.integers(0, 3000))
        q = near(vectors[target], rng, 0.01)
        found = idx.search_sync("s1", q, threshold=0.0, limit=1, now=time.time())
        misses += found[0].id != f"p{int(np.argmax(vectors @ q))}"
    assert misses == 0
    # removal keeps rows consistent (the last row moves into the gap)
    await idx.delete([f"p{i}" for i in range(0, 3000, 2)])
    q = near(vectors[1], rng, 0.005)
    assert idx.search_sync("s1", q, threshold=0.9, limit=1, now=time.time())[0].id == "p1"
    await idx.close()
