"""Tiny real model files for tests, written with numpy: a 2-layer llama GGUF (llama.cpp) and a 2-layer
GPT-2 in the GGML-era format (ctransformers). Random weights, a small real vocabulary: the engines load
and run them like any other model, in milliseconds."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# A small sentencepiece-style vocabulary: control tokens, byte fallbacks, and a few words.
WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "and", "ran", "to", "house", "red", "blue", "green",
    "one", "two", "three", "four", "five", "is", "was", "big", "small", "tree", "sun", "moon", "star",
    "hello", "world", "yes", "no", "up", "down", "left", "right", "fast", "slow", "day", "night", "sky",
]  # fmt: skip


def write_tiny_llama_gguf(
    path: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context_length: int = 4096,
    seed: int = 1234,
    chat_template: str | None = None,
) -> Path:
    """A 2-layer llama with random F32 weights and an SPM vocabulary (~0.5 MB)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)
    for i, word in enumerate(WORDS):
        tokens.append(("\u2581" + word).encode())
        types.append(gguf.TokenType.NORMAL)
        scores.append(-float(i) - 1.0)
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz .,!?\u2581"):
        tokens.append(ch.encode())
        types.append(gguf.TokenType.NORMAL)
        scores.append(-100.0 - i)
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    def t(name: str, *shape: int, scale: float = 0.3) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    n_kv = n_embd // n_head * n_head_kv
    t("token_embd.weight", n_vocab, n_embd, scale=1.0)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    t("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_kv, n_embd)
        t(f"blk.{i}.attn_v.weight", n_kv, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_gpt2_ggml(
    path: Path, *, n_embd: int = 32, n_layer: int = 2, n_head: int = 4, n_ctx: int = 256, seed: int = 99
) -> Path:
    """A 2-layer GPT-2 in the GGML-era file format (magic 'ggml', F32): what ctransformers loads."""
    rng = np.random.default_rng(seed)
    vocab = [bytes([b]) for b in range(256)] + [(" " + w).encode() for w in WORDS] + [b"<|endoftext|>"]
    n_vocab = len(vocab)
    with path.open("wb") as f:
        f.write(struct.pack("<I", 0x67676D6C))
        f.write(struct.pack("<6i", n_vocab, n_ctx, n_embd, n_head, n_layer, 0))
        f.write(struct.pack("<i", n_vocab))
        for tok in vocab:
            f.write(struct.pack("<I", len(tok)) + tok)

        def tensor(name: str, *ne: int, ones: bool = False, scale: float = 0.3) -> None:
            n = int(np.prod(ne))
            data = np.ones(n, np.float32) if ones else (rng.standard_normal(n) * scale).astype(np.float32)
            raw = name.encode()
            f.write(struct.pack("<3i", len(ne), len(raw), 0))
            f.write(struct.pack(f"<{len(ne)}i", *ne))
            f.write(raw)
            f.write(data.tobytes())

        tensor("model/ln_f/g", n_embd, ones=True)
        tensor("model/ln_f/b", n_embd, scale=0.0)
        tensor("model/wte", n_embd, n_vocab, scale=1.0)
        tensor("model/wpe", n_embd, n_ctx, scale=0.1)
        for i in range(n_layer):
            p = f"model/h{i}"
            tensor(f"{p}/ln_1/g", n_embd, ones=True)
            tensor(f"{p}/ln_1/b", n_embd, scale=0.0)
            tensor(f"{p}/ln_2/g", n_embd, ones=True)
            tensor(f"{p}/ln_2/b", n_embd, scale=0.0)
            tensor(f"{p}/attn/c_attn/w", n_embd, 3 * n_embd)
            tensor(f"{p}/attn/c_attn/b", 3 * n_embd, scale=0.0)
            tensor(f"{p}/attn/c_proj/w", n_embd, n_embd)
            tensor(f"{p}/attn/c_proj/b", n_embd, scale=0.0)
            tensor(f"{p}/mlp/c_fc/w", n_embd, 4 * n_embd)
            tensor(f"{p}/mlp/c_fc/b", 4 * n_embd, scale=0.0)
            tensor(f"{p}/mlp/c_proj/w", 4 * n_embd, n_embd)
            tensor(f"{p}/mlp/c_proj/b", n_embd, scale=0.0)
    return path
