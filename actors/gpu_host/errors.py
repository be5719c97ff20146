"""Errors of the gpu_host, each with the bus error code it becomes at the boundary.

GpuHostError                 internal
 ├── ModelLoadError          unavailable       llama.cpp / ctransformers refused the file
 ├── OutOfMemory             oom               a load past the card budget, or a real allocation failure
 ├── ContextTooLong          context_too_long  prompt + max_tokens exceed the model's context
 ├── DeadlineExceeded        timeout           the request's deadline passed (before or during generation)
 ├── Unloading               unavailable       the model was unloaded under the request (swap, eviction)
 └── EngineError             internal          decoding failed
"""

from __future__ import annotations

from schemas.errors import ErrorCode, ErrorInfo
from weights.errors import ModelNotFound

# The model library's ModelNotFound (weights.errors: not in the library, no source, or the file is missing)
# is raised by the library and by the manager; catch sites catch HOST_ERRORS.


class GpuHostError(Exception):
    code: ErrorCode = "internal"

    def to_info(self) -> ErrorInfo:
        return ErrorInfo.of(self.code, str(self))


class ModelLoadError(GpuHostError):
    code: ErrorCode = "unavailable"


class OutOfMemory(GpuHostError):
    code: ErrorCode = "oom"

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        card: str = "",
        requested_bytes: int = 0,
        free_bytes: int = 0,
        total_bytes: int = 0,
    ) -> None:
        super().__init__(message)
        self.model, self.card = model, card
        self.requested_bytes, self.free_bytes, self.total_bytes = requested_bytes, free_bytes, total_bytes


class ContextTooLong(GpuHostError):
    code: ErrorCode = "context_too_long"


class DeadlineExceeded(GpuHostError):
    code: ErrorCode = "timeout"


class Unloading(GpuHostError):
    code: ErrorCode = "unavailable"


class BadRequest(GpuHostError):
    code: ErrorCode = "bad_request"


class EngineError(GpuHostError):
    code: ErrorCode = "internal"


HOST_ERRORS = (GpuHostError, ModelNotFound)
"""Everything a load or a generation may raise on purpose; each has ``code`` and ``to_info()``."""
