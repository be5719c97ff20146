"""Errors of the model files, each with the bus error code it becomes at the boundary.

WeightsError
 ├── ModelNotFound         unavailable  a GGUF model is not in the library, has no source, or its file is missing
 ├── ModelError            unavailable  the embedding model cannot be built or loaded
 │    ├── ModelMissing     its source weights or a file it needs are not there
 │    └── ModelCorrupt     a file is there but unreadable, or the model computes wrong embeddings
 └── EmbedError            internal     embedding a text failed at run time

Foreign errors (gguf, onnx, onnxruntime) are converted here with ``raise ... from exc``; the message always
names the file. The actors that use these (gpu_host, cache, diversity_monitor) catch them next to their own.
"""

from __future__ import annotations

from schemas.errors import ErrorCode, ErrorInfo


class WeightsError(Exception):
    code: ErrorCode = "unavailable"

    def to_info(self) -> ErrorInfo:
        return ErrorInfo.of(self.code, str(self))


class ModelNotFound(WeightsError):
    code: ErrorCode = "unavailable"


class ModelError(WeightsError):
    code: ErrorCode = "unavailable"


class ModelMissing(ModelError):
    pass


class ModelCorrupt(ModelError):
    pass


class EmbedError(WeightsError):
    code: ErrorCode = "internal"
