"""Sentence embeddings with fastembed on the offline-built all-MiniLM-L6-v2 (I/O).

    embedder = Embedder.load(model_dir, threads=1)   # builds the ONNX model on first use, checks it
    vectors = await embedder.embed(["how do I ..."])  # float32 [n, 384], L2-normalised, in a worker thread

Loading verifies the model against sentence-transformers' reference output for "hello world" (the values
fastembed's own tests use), so a wrong or damaged model fails at start, not as silent bad hits.
onnxruntime runs with ``threads`` intra-op threads in one worker thread: the event loop never blocks
and the CPU stays shared with the rest of the orchestra.

``embed`` is what lookups call, and it saves model runs (each one reads all of MiniLM's weights, int8 since
build 2, so on this machine it costs 2.6 ms alone and several times that when neighbours load the memory bus):

    recent texts    the vectors of the last ``RECENT`` short texts are kept: the same prompt asked again
                    (another model, another sampling, a retry) is not embedded twice
    one pass for all texts that wait: what callers ask while the worker runs is embedded in its next
                    pass, so concurrent lookups queue behind one hand-off to the worker, not one each

Each text gets a model run of its own, never a padded batch: the int8 model quantises its activations
with one scale per run, so a text's vector would depend on the texts beside it (cosine 0.991 at worst to
its vector alone, measured); batches of 32 cost 14-21% less a text on this machine, not worth that.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from weights.errors import EmbedError, ModelCorrupt, ModelError
from weights.minilm import MAX_SEQ_LENGTH, MODEL_NAME, ensure_model

log = logging.getLogger(__name__)

DIM = 384
# A WordPiece token covers at most 100 characters (longer words are one [UNK]) plus a separator: a text
# longer than this cannot be read whole unless it is mostly whitespace, and is treated as too long.
MAX_FIT_CHARS = MAX_SEQ_LENGTH * 101
# sentence-transformers' all-MiniLM-L6-v2 on "hello world", first five dimensions (fastembed's own test values)
REFERENCE_TEXT = "hello world"
REFERENCE_PREFIX = np.array([-0.034478, 0.03102, 0.00673, 0.02611, -0.039362], dtype=np.float32)
# The int8 build (weights/quantize.py) moves these five values by up to 8.4e-3 (the float32 graph: 1e-6); a
# model with one weight matrix halved misses them by 0.046 (tests/integration/test_cache_embeddings.py).
REFERENCE_ATOL = 0.02
RECENT = 4096  # vectors of recently embedded texts kept (1.5 KB each)
RECENT_MAX_CHARS = 2000  # longer texts are not kept (the keys would outweigh the vectors)
MAX_BATCH = 32  # texts embedded in one model run at most


class Embedder:
    def __init__(self, model: Any, model_dir: Path, threads: int) -> None:
        self._model = model
        self.model_dir = model_dir
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self.threads = threads
        self.recent: OrderedDict[str, np.ndarray] = OrderedDict()  # text -> vector, the last RECENT texts
        self._waiting: dict[str, asyncio.Future[np.ndarray]] = {}  # text -> its vector, once embedded
        self._runner: asyncio.Task[None] | None = None
        self.runs = 0  # worker passes made by ``embed`` (for tests and benchmarks)

    @classmethod
    def load(cls, model_dir: Path, *, threads: int = 1, source: Path | None = None) -> Embedder:
        """Build (first start) or check the model folder, load it and verify it. Blocking: seconds."""
        ensure_model(model_dir, source)
        try:
            from fastembed import TextEmbedding

            model = TextEmbedding(
                model_name=MODEL_NAME,
                specific_model_path=str(model_dir),
                cache_dir=str(model_dir),  # unused with specific_model_path; an existing folder
                threads=threads,
                local_files_only=True,
            )
        except Exception as exc:  # onnxruntime / tokenizers / fastembed say it in their own ways
            raise ModelCorrupt(f"cannot load the embedding model from {model_dir}: {exc}") from exc
        embedder = cls(model, model_dir, threads)
        try:
            got = embedder.embed_sync([REFERENCE_TEXT])[0][:5]
        except EmbedError as exc:
            raise ModelCorrupt(f"the embedding model in {model_dir} cannot run: {exc}") from exc
        if not np.allclose(got, REFERENCE_PREFIX, atol=REFERENCE_ATOL):
            raise ModelCorrupt(
                f"the embedding model in {model_dir} computes wrong embeddings "
                f"({np.round(got, 4).tolist()} instead of {REFERENCE_PREFIX.tolist()}): delete it to rebuild"
            )
        log.info("embedding model ready (%s, %d thread(s))", model_dir, threads)
        return embedder

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        try:
            vectors = np.stack(list(self._model.embed(texts, batch_size=1)))  # alone: see the module's doc
        except Exception as exc:
            raise EmbedError(f"embedding {len(texts)} text(s) failed: {exc}") from exc
        return vectors.astype(np.float32, copy=False)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed in the worker thread; the event loop keeps running. Texts seen lately are not embedded
        again; texts that other callers are waiting for are embedded in the same run."""
        if not texts:
            return np.empty((0, DIM), np.float32)
        vectors = [self.recent.get(t) for t in texts]
        missing = [t for t, v in zip(texts, vectors, strict=True) if v is None]
        if missing:
            loop = asyncio.get_running_loop()
            if self._runner is not None and self._runner.get_loop() is not loop:  # an earlier loop's leftovers
                self._waiting.clear()
                self._runner = None
            futures = {t: self._waiting.get(t) or self._wait_for(t, loop) for t in dict.fromkeys(missing)}
            if self._runner is None or self._runner.done():
                self._runner = loop.create_task(self._run())
            # shielded: a caller that gives up does not take the vector away from the others waiting for it
            done = {t: await asyncio.shield(f) for t, f in futures.items()}
            vectors = [done[t] if v is None else v for t, v in zip(texts, vectors, strict=True)]
        for t, v in zip(texts, vectors, strict=True):
            self._keep(t, v)  # type: ignore[arg-type]
        return np.stack(vectors).astype(np.float32, copy=False)  # type: ignore[arg-type]

    def _wait_for(self, text: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future[np.ndarray]:
        future = self._waiting[text] = loop.create_future()
        return future

    async def _run(self) -> None:
        """Embed what is waiting, up to MAX_BATCH texts a model run, until nothing is."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch = list(self._waiting.items())[:MAX_BATCH]
            failure: BaseException | None = None
            try:
                vectors = await loop.run_in_executor(self._pool, self.embed_sync, [t for t, _ in batch])
            except Exception as exc:  # EmbedError, or the pool shut down: every waiter hears it
                failure, vectors = exc, np.empty((0, DIM), np.float32)
            self.runs += 1
            for i, (text, future) in enumerate(batch):
                self._waiting.pop(text, None)
                if future.done():
                    continue
                if failure is not None:
                    future.set_exception(failure)
                    future.exception()  # retrieved: a waiter that gave up leaves no "never retrieved" warning
                else:
                    future.set_result(vectors[i].copy())

    def _keep(self, text: str, vector: np.ndarray) -> None:
        if len(text) > RECENT_MAX_CHARS:
            return
        self.recent[text] = vector
        self.recent.move_to_end(text)
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    def count_tokens(self, text: str) -> int:
        """Tokens MiniLM reads for ``text`` (special tokens included); 0 when the tokenizer is not loaded."""
        tokenizer = getattr(self._model.model, "tokenizer", None)
        return 0 if tokenizer is None else len(tokenizer.encode(text).ids)

    async def count(self, texts: list[str]) -> list[int]:
        """:meth:`count_tokens` of each text, in the worker thread (the event loop keeps running)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: [self.count_tokens(t) for t in texts]
        )

    def fits(self, text: str, max_tokens: int = MAX_SEQ_LENGTH - 1) -> bool:
        """Whether ``text`` is at most ``max_tokens`` tokens (special tokens included). MiniLM truncates after
        256: two long prompts that differ only after that point would embed the same, so they stay out of
        the semantic layer; a caller may bound it lower (a model run costs more with every token)."""
        max_tokens = min(max_tokens, MAX_SEQ_LENGTH - 1)
        if len(text) > (max_tokens + 1) * 101:  # no tokenisation of a huge prompt on the lookup path
            return False
        tokenizer = getattr(self._model.model, "tokenizer", None)
        if tokenizer is None:  # not loaded yet: be conservative on length
            return len(text) < 4 * (max_tokens + 1)
        return len(tokenizer.encode(text).ids) <= max_tokens

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def load_embedder(model_dir: Path, *, threads: int = 1) -> Embedder:
    """``Embedder.load`` for callers that want ModelError only."""
    try:
        return Embedder.load(model_dir, threads=threads)
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(f"cannot prepare the embedding model in {model_dir}: {exc}") from exc
