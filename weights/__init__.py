"""Model files: the GGUF library and the MiniLM embedding model (reads files; no bus)."""
