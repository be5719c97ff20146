"""Errors of the cache actor.

CacheError
 ├── ModelError            the embedding model cannot be built or loaded
 │    ├── ModelMissing     its source weights or a file it needs are not there
 │    └── ModelCorrupt     a file is there but unreadable, or the model computes wrong embeddings
 ├── EmbedError            embedding a prompt failed at run time
 └── StoreError            the vector store (Qdrant, the embedded index) or the exact store failed

Foreign errors (onnx, onnxruntime, fastembed, qdrant-client, nats) are converted at the boundary with
``raise ... from exc``; the message always names the file or the store.
"""

from __future__ import annotations


class CacheError(Exception):
    pass


class ModelError(CacheError):
    pass


class ModelMissing(ModelError):
    pass


class ModelCorrupt(ModelError):
    pass


class EmbedError(CacheError):
    pass


class StoreError(CacheError):
    pass
