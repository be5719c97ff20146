"""``POST /v1/embeddings`` (pure part): the OpenAI request -> texts, vectors -> the OpenAI answer.

Two kinds of model: the cache's all-MiniLM-L6-v2 (384 dimensions, L2-normalised), served by the cache actor
on ``orch.svc.cache.embed``, and the profile's ``embedding_models`` (a provider's OpenAI-compatible or
Gemini embeddings), served by the cloud_proxy on ``orch.svc.cloud.embed`` and budgeted there. A chat
model named here is a 400 that says so (Anthropic's: it offers no embeddings API at all). Every field is
honoured or refused by name: token-id inputs (another model's tokenizer), ``dimensions`` other than 384
on MiniLM, and texts longer than MiniLM reads (256 tokens; refused by the cache, never truncated) are 400s.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import msgspec

from schemas.cache import EMBED_MODEL, MAX_EMBED_INPUTS, EmbedReply
from schemas.codec import Codec
from schemas.config.models import CloudModel, EmbeddingModel
from schemas.config.root import OrchestraConfig
from schemas.errors import SchemaError

DIMENSIONS = 384


class EmbeddingsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


EMBEDDINGS: Codec[EmbeddingsRequest] = Codec(EmbeddingsRequest)


class NotEmbedding(SchemaError):
    """The model exists but makes no embeddings (a chat model): a 400, not a 404."""


def model_of(body: EmbeddingsRequest, cfg: OrchestraConfig) -> EmbeddingModel | None:
    """The cloud embedding model asked for, None for MiniLM; SchemaError (404) for an unknown name,
    NotEmbedding (400) for a chat model."""
    name = body.model
    if name == EMBED_MODEL:
        if body.dimensions not in (None, DIMENSIONS):
            raise SchemaError(f"{EMBED_MODEL} has {DIMENSIONS} dimensions", "dimensions")
        return None
    cloud = cfg.embedding_models.get(name)
    if cloud is not None:
        return cloud
    offered = ", ".join([EMBED_MODEL, *cfg.embedding_models])
    chat = cfg.models.get(name)
    api = cfg.providers[chat.provider].api if isinstance(chat, CloudModel) and chat.provider in cfg.providers else None
    if isinstance(chat, CloudModel) and api == "anthropic":
        raise NotEmbedding(
            f"`{name}` is a chat model of {chat.provider} (the Anthropic API), which offers no embeddings; "
            f"embedding models here: {offered}",
            "model",
        )
    if chat is not None:
        raise NotEmbedding(f"`{name}` is a chat model, not an embedding model; embedding models: {offered}", "model")
    raise SchemaError(f"The model `{name}` does not exist (embeddings: {offered})", "model")


def texts_of(body: EmbeddingsRequest, max_inputs: int = MAX_EMBED_INPUTS) -> list[str]:
    """The texts to embed; SchemaError names what cannot be honoured."""
    given = body.input
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts:
        raise SchemaError("a string or a non-empty list of strings", "input")
    if len(texts) > max_inputs:
        raise SchemaError(f"at most {max_inputs} inputs per request", "input")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise SchemaError("token ids are not supported (they belong to another model's tokenizer)", f"input[{i}]")
        if not t:
            raise SchemaError("must not be empty", f"input[{i}]")
    return texts


def response(reply: EmbedReply, encoding: str, model: str = EMBED_MODEL) -> dict[str, Any]:
    def encode(vector: list[float]) -> Any:
        if encoding == "base64":  # OpenAI's: little-endian float32, base64
            import numpy as np

            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(reply.vectors)]
    usage = {"prompt_tokens": reply.tokens, "total_tokens": reply.tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}
