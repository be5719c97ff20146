"""Errors of the cache actor.

CacheError
 └── StoreError            the vector store (Qdrant, the embedded index) or the exact store failed

The embedding model's errors (ModelError, ModelMissing, ModelCorrupt, EmbedError) are weights.errors.

Foreign errors (onnx, onnxruntime, fastembed, qdrant-client, nats) are converted at the boundary with
``raise ... from exc``; the message always names the file or the store.
"""

from __future__ import annotations


class CacheError(Exception):
    pass


class StoreError(CacheError):
    pass
