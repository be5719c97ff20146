"""llama.cpp's own batched decoding with no scheduler: the ceiling that batching can reach on a machine,
for bench/local_inference.py's "llama.cpp batched" column."""

from __future__ import annotations

import time
from pathlib import Path


def kernel_run(path: Path, prompts: list[str], max_tokens: int, threads: int, context: int) -> dict[str, float]:
    """The prompts prefilled one by one, then ``max_tokens`` steps of one ``llama_decode`` for all of them,
    with the gpu_host engine's context settings (one KV stream per sequence, no repacked CPU weights)."""
    import llama_cpp as lc

    n = len(prompts)
    mp = lc.llama_model_default_params()
    mp.n_gpu_layers, mp.use_extra_bufts = 0, False
    model = lc.llama_model_load_from_file(str(path).encode(), mp)
    assert model, f"cannot load {path}"
    cp = lc.llama_context_default_params()
    cp.n_ctx, cp.n_seq_max, cp.kv_unified, cp.no_perf = context * n, n, False, True
    cp.n_batch = cp.n_ubatch = min(512, cp.n_ctx)
    cp.n_threads = cp.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, cp)
    assert ctx, "cannot create the context"
    vocab = lc.llama_model_get_vocab(model)
    batch = lc.llama_batch_init(cp.n_batch, 0, 1)
    greedy = lc.llama_sampler_init_greedy()

    def decode(entries: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    try:
        started = time.perf_counter()
        last: list[tuple[int, int]] = []  # (first generated token, its position) per sequence
        for seq, prompt in enumerate(prompts):
            buf = (lc.llama_token * 256)()
            k = lc.llama_tokenize(vocab, prompt.encode(), len(prompt.encode()), buf, 256, True, False)
            decode([(buf[j], j, seq, j == k - 1) for j in range(k)])
            last.append((lc.llama_sampler_sample(greedy, ctx, -1), k))
        for step in range(max_tokens - 1):  # the same tokens for every step: the cost does not depend on them
            decode([(token, pos + step, seq, True) for seq, (token, pos) in enumerate(last)])
        wall = time.perf_counter() - started
    finally:
        lc.llama_sampler_free(greedy)
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    tokens = n * max_tokens
    return {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall}
