"""What a quantisation variant costs in quality and gives in speed, measured with llama.cpp (blocking).

    q = measure(path, threads=2)      # Measured(perplexity=..., scored_tokens=..., tokens_per_s=..., text=...)

Perplexity is computed as llama.cpp's ``llama-perplexity`` does: the project's fixed text
(``data/quality.txt``, ~700 words of plain English prose written for this purpose) is cut into chunks of
``n_ctx`` tokens, each decoded from an empty cache, and the second half of each chunk is scored (every token
there has at least ``n_ctx / 2`` tokens of context): exp(mean negative log-likelihood). Lower is better; it
only compares variants of the same model (another tokenizer scores other tokens). Speed is greedy decoding
at batch 1 after a short prompt, ``gen_tokens`` tokens, on the threads given.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np

from actors.gpu_host.batching import Vocab
from actors.gpu_host.errors import ModelLoadError
from actors.gpu_host.llama_engine import install_llama_log

QUALITY_TEXT = Path(__file__).resolve().parent / "data" / "quality.txt"
SPEED_PROMPT = "The river begins as a thin stream high in the hills, where"


@dataclass(frozen=True)
class Measured:
    perplexity: float
    scored_tokens: int
    tokens_per_s: float
    text: str  # which text: name:sha256[:12], and the chunk size

    @property
    def perplexity_text(self) -> str:
        return f"{self.text} ({self.scored_tokens} tokens scored)"


def text_id(path: Path, n_ctx: int) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.name}:{digest}@{n_ctx}"


def measure(
    path: Path,
    *,
    text: Path = QUALITY_TEXT,
    n_ctx: int = 256,
    threads: int = 2,
    gen_tokens: int = 64,
    gpu_layers: int = 0,
) -> Measured:
    """Perplexity on ``text`` and decode speed of the GGUF at ``path``. Raises ModelLoadError."""
    lines = install_llama_log()
    lines.clear()
    mp = lc.llama_model_default_params()
    mp.n_gpu_layers = gpu_layers
    mp.use_extra_bufts = gpu_layers != 0
    model = lc.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        raise ModelLoadError(f"llama.cpp could not load {path}: {'; '.join(lines)[-300:]}")
    cp = lc.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
    cp.n_seq_max = 1
    cp.n_threads = cp.n_threads_batch = threads
    cp.no_perf = True
    ctx = lc.llama_init_from_model(model, cp)
    if not ctx:
        lc.llama_model_free(model)
        raise ModelLoadError(f"llama.cpp could not create a {n_ctx}-token context for {path}")
    batch = lc.llama_batch_init(n_ctx, 0, 1)
    try:
        vocab = Vocab(model)
        tokens = vocab.tokenize(text.read_text(encoding="utf-8"), add_special=True)
        ppl, scored = _perplexity(ctx, batch, vocab.n_vocab, tokens, n_ctx)
        speed = _speed(ctx, batch, vocab.n_vocab, vocab.tokenize(SPEED_PROMPT), gen_tokens)
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    return Measured(round(ppl, 4), scored, round(speed, 1), text_id(text, n_ctx))


def _fill(batch: Any, tokens: list[int], start_pos: int, all_logits: bool) -> None:
    for i, tok in enumerate(tokens):
        batch.token[i] = tok
        batch.pos[i] = start_pos + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = all_logits or i == len(tokens) - 1
    batch.n_tokens = len(tokens)


def _decode(ctx: ctypes.c_void_p, batch: lc.llama_batch) -> None:
    rc = lc.llama_decode(ctx, batch)
    if rc != 0:
        raise ModelLoadError(f"llama_decode returned {rc} for {batch.n_tokens} tokens")


def _perplexity(
    ctx: ctypes.c_void_p, batch: lc.llama_batch, n_vocab: int, tokens: list[int], n_ctx: int
) -> tuple[float, int]:
    if len(tokens) < n_ctx:
        raise ValueError(f"the quality text has {len(tokens)} tokens, fewer than one chunk of {n_ctx}")
    memory = lc.llama_get_memory(ctx)
    nll, scored = 0.0, 0
    first = n_ctx // 2
    for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
        chunk = tokens[start : start + n_ctx]
        lc.llama_memory_clear(memory, True)
        _fill(batch, chunk, 0, all_logits=True)
        _decode(ctx, batch)
        logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n_ctx, n_vocab))
        rows = logits[first : n_ctx - 1].astype(np.float64)
        targets = np.asarray(chunk[first + 1 : n_ctx])
        top = rows.max(axis=1)
        lse = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
        nll += float((lse - rows[np.arange(len(targets)), targets]).sum())
        scored += len(targets)
    return math.exp(nll / scored), scored


def _speed(ctx: ctypes.c_void_p, batch: lc.llama_batch, n_vocab: int, prompt: list[int], n: int) -> float:
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    _fill(batch, prompt, 0, all_logits=False)
    _decode(ctx, batch)
    pos = len(prompt)
    started = time.perf_counter()
    for _ in range(n):
        row = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        _fill(batch, [int(row.argmax())], pos, all_logits=True)
        _decode(ctx, batch)
        pos += 1
    return n / (time.perf_counter() - started)
