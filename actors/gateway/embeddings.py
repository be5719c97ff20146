"""``POST /v1/embeddings`` (pure part): the OpenAI request -> texts, MiniLM vectors -> the OpenAI answer.

The model is the cache's all-MiniLM-L6-v2 (384 dimensions, L2-normalised), served by the cache actor on
``orch.svc.cache.embed``. Every field is honoured or refused by name: token-id inputs (another model's
tokenizer), ``dimensions`` other than 384, and texts longer than MiniLM reads (256 tokens; refused by the
cache, never truncated) are 400s.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import msgspec

from schemas.cache import EMBED_MODEL, MAX_EMBED_INPUTS, EmbedReply
from schemas.codec import Codec
from schemas.errors import SchemaError

DIMENSIONS = 384


class EmbeddingsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


EMBEDDINGS: Codec[EmbeddingsRequest] = Codec(EmbeddingsRequest)


def texts_of(body: EmbeddingsRequest) -> list[str]:
    """The texts to embed; SchemaError names what cannot be honoured."""
    if body.model != EMBED_MODEL:
        raise SchemaError(f"The model `{body.model}` does not exist (embeddings: `{EMBED_MODEL}`)", "model")
    if body.dimensions not in (None, DIMENSIONS):
        raise SchemaError(f"{EMBED_MODEL} has {DIMENSIONS} dimensions", "dimensions")
    given = body.input
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts:
        raise SchemaError("a string or a non-empty list of strings", "input")
    if len(texts) > MAX_EMBED_INPUTS:
        raise SchemaError(f"at most {MAX_EMBED_INPUTS} inputs per request", "input")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise SchemaError("token ids are not supported (they belong to another model's tokenizer)", f"input[{i}]")
        if not t:
            raise SchemaError("must not be empty", f"input[{i}]")
    return texts


def response(reply: EmbedReply, encoding: str) -> dict[str, Any]:
    def encode(vector: list[float]) -> Any:
        if encoding == "base64":  # OpenAI's: little-endian float32, base64
            import numpy as np

            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(reply.vectors)]
    usage = {"prompt_tokens": reply.tokens, "total_tokens": reply.tokens}
    return {"object": "list", "data": data, "model": EMBED_MODEL, "usage": usage}
