"""Embeddings in the providers' wire formats (pure: bodies in, vectors out).

OpenAI-compatible   POST {base}/embeddings  {"model", "input": [...], "encoding_format": "float",
                    "dimensions"?}  ->  {"data": [{"index", "embedding"}], "usage": {"prompt_tokens"}}
Gemini              POST {base}/v1beta/models/{m}:batchEmbedContents  {"requests": [{"model",
                    "content": {"parts": [{"text"}]}, "outputDimensionality"?}]}  ->  {"embeddings":
                    [{"values"}]}  (no token counts: they are estimated)
Anthropic           none: the config check refuses an embedding model there; asked anyway, Unavailable.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from actors.cloud_proxy.errors import ServerError, Unavailable


def embed_url(api: str, base_url: str, remote: str) -> str:
    if api == "openai":
        return f"{base_url}/embeddings"
    if api == "gemini":
        model = quote(remote, safe="-._~/")
        model = model if model.startswith("models/") else f"models/{model}"
        return f"{base_url}/v1beta/{model}:batchEmbedContents"
    raise Unavailable(f"the {api} API offers no embeddings")


def _gemini_model(remote: str) -> str:
    return remote if remote.startswith("models/") else f"models/{remote}"


def embed_body(api: str, remote: str, texts: list[str], dimensions: int | None) -> dict[str, Any]:
    if api == "openai":
        body: dict[str, Any] = {"model": remote, "input": texts, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return body
    if api == "gemini":
        requests = []
        for text in texts:
            one: dict[str, Any] = {"model": _gemini_model(remote), "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                one["outputDimensionality"] = dimensions
            requests.append(one)
        return {"requests": requests}
    raise Unavailable(f"the {api} API offers no embeddings")


def _vector(given: Any) -> list[float]:
    if not isinstance(given, list) or not given:
        raise ServerError("an embedding that is not a list of numbers")
    try:
        out = [float(x) for x in given]
    except (TypeError, ValueError) as exc:
        raise ServerError("an embedding that is not a list of numbers") from exc
    if not all(math.isfinite(x) for x in out):
        raise ServerError("an embedding with a non-finite number")
    return out


def parse_embeddings(api: str, data: Any, count: int) -> tuple[list[list[float]], int | None]:
    """(one vector per text in order, input tokens or None). ServerError for a shape we cannot read."""
    if not isinstance(data, dict):
        raise ServerError("unexpected embeddings answer")
    if api == "openai":
        items = data.get("data")
        if not isinstance(items, list) or len(items) != count:
            raise ServerError(f"expected {count} embeddings")
        ordered = sorted(items, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
        vectors = [_vector(d.get("embedding") if isinstance(d, dict) else None) for d in ordered]
        usage = data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return vectors, int(tokens) if isinstance(tokens, int) else None
    items = data.get("embeddings")
    if not isinstance(items, list) or len(items) != count:
        raise ServerError(f"expected {count} embeddings")
    return [_vector(d.get("values") if isinstance(d, dict) else None) for d in items], None
