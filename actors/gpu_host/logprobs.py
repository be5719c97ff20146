"""Token log probabilities from a llama.cpp logits row (OpenAI's ``logprobs`` / ``top_logprobs``): the
model's own distribution (a log-softmax of the raw logits, before temperature, penalties or a grammar),
the sampled token's value and the ``top`` most likely tokens."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from schemas.result import TokenLogprob, TopLogprob


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def token_logprob(
    logits_ptr: ctypes._Pointer[ctypes.c_float] | ctypes.c_void_p,
    n_vocab: int,
    token: int,
    top: int,
    piece: Callable[[int], bytes],
) -> TokenLogprob:
    logits = np.ctypeslib.as_array(ctypes.cast(logits_ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
    peak = float(logits.max())
    lse = peak + float(np.log(np.exp(logits - peak).sum()))
    alternatives: list[TopLogprob] = []
    if top > 0:
        best = np.argpartition(-logits, top - 1)[:top]
        for t in best[np.argsort(-logits[best])]:
            raw = piece(int(t))
            alternatives.append(TopLogprob(token=_text(raw), logprob=float(logits[t]) - lse, bytes=list(raw)))
    raw = piece(token)
    return TokenLogprob(
        token=_text(raw), logprob=float(logits[token]) - lse, bytes=list(raw), top_logprobs=alternatives
    )
