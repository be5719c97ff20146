"""The llama.cpp engine (llama-cpp-python's low-level API): one model, one context, continuous batching.

Placement becomes llama.cpp parameters: on a CPU card everything stays in RAM (``n_gpu_layers`` 0, no
repacked weight buffers, so batched and single decodes compute the same numbers); on CUDA cards
``n_gpu_layers`` layers go to the GPU, ``main_gpu`` is the card's index, and a model split over a card
group gets ``split_mode`` LAYER with ``tensor_split`` in proportion to the memory planned on each card.
A load that llama.cpp cannot allocate (model buffers or the KV cache) raises OutOfMemory with its log line.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import deque

import llama_cpp as lc

from actors.gpu_host.batching import BatchScheduler, Vocab
from actors.gpu_host.engine import LoadSpec, ThreadEngine
from actors.gpu_host.errors import GpuHostError, ModelLoadError, OutOfMemory

log = logging.getLogger(__name__)
llama_log = logging.getLogger("llama_cpp")

N_BATCH = 512  # tokens per llama_decode (prompt chunks + one token per running sequence)
_OOM_MARKERS = (
    "failed to allocate",
    "out of memory",
    "cudamalloc failed",
    "unable to allocate",
    "alloc failed",
    "cannot allocate memory",  # ENOMEM from mmap (the weights' address space)
)


class _LlamaLog:
    """Routes llama.cpp's log to Python logging and keeps each thread's recent lines (to explain failures)."""

    _installed = False
    _lock = threading.Lock()
    _local = threading.local()

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if cls._installed:
                return
            lc.llama_backend_init()
            lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
            cls._installed = True

    @classmethod
    def lines(cls) -> deque[str]:
        lines: deque[str] | None = getattr(cls._local, "lines", None)
        if lines is None:
            lines = cls._local.lines = deque(maxlen=50)
        return lines


def install_llama_log() -> deque[str]:
    """llama.cpp's log into Python logging; the calling thread's recent lines (cleared by the caller)."""
    _LlamaLog.install()
    return _LlamaLog.lines()


# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


@lc.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", "replace").rstrip()
    if not line:
        return
    _LlamaLog.lines().append(line)
    llama_log.log(_LEVELS.get(level, logging.DEBUG), "%s", line)


class LlamaCppEngine(ThreadEngine):
    kind = "llama_cpp"

    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(spec)
        self.model: ctypes.c_void_p | None = None
        self.ctx: ctypes.c_void_p | None = None
        self.scheduler: BatchScheduler | None = None
        self.chat_template: str | None = None
        self.bos_text = ""
        self.eos_text = ""
        self._split: ctypes.Array[ctypes.c_float] | None = None

    # --- engine thread -----------------------------------------------------------------------------
    def _load(self) -> None:
        _LlamaLog.install()
        lines = _LlamaLog.lines()
        lines.clear()
        spec = self.spec
        mp = lc.llama_model_default_params()
        if spec.device == "cpu":
            mp.n_gpu_layers = 0
            mp.use_extra_bufts = False
        else:
            mp.n_gpu_layers = 999 if spec.n_gpu_layers < 0 else spec.n_gpu_layers
            mp.main_gpu = spec.main_gpu
            if spec.tensor_split:
                n = lc.llama_max_devices()
                self._split = (ctypes.c_float * n)(*[*spec.tensor_split, *([0.0] * n)][:n])
                mp.split_mode = lc.LLAMA_SPLIT_MODE_LAYER
                mp.tensor_split = self._split
            else:
                mp.split_mode = lc.LLAMA_SPLIT_MODE_NONE
        model = lc.llama_model_load_from_file(str(spec.path).encode(), mp)
        if not model:
            raise self._failure("load the model file", lines)
        self.model = model
        cp = lc.llama_context_default_params()
        cp.n_ctx = spec.context * spec.batch
        cp.n_batch = cp.n_ubatch = min(N_BATCH, cp.n_ctx)
        cp.n_seq_max = spec.batch
        cp.n_threads = spec.n_threads
        cp.n_threads_batch = spec.n_threads_batch
        cp.kv_unified = False
        cp.no_perf = True
        ctx = lc.llama_init_from_model(model, cp)
        if not ctx:
            raise self._failure(f"create a context for {spec.batch} x {spec.context} tokens", lines)
        self.ctx = ctx
        vocab = Vocab(model)
        self.chat_template = _meta(model, "tokenizer.chat_template")
        self.bos_text = _token_text(vocab, lc.llama_vocab_bos(vocab.vocab))
        self.eos_text = _token_text(vocab, lc.llama_vocab_eos(vocab.vocab))
        self.scheduler = BatchScheduler(
            ctx, vocab, n_seq=spec.batch, context=spec.context, n_batch=cp.n_batch, rate=self._rate
        )

    def _failure(self, what: str, lines: deque[str]) -> GpuHostError:
        self._free()
        detail = "; ".join(lines) or "no detail from llama.cpp"
        lowered = detail.lower()
        if any(m in lowered for m in _OOM_MARKERS):
            oom = next(line for line in lines if any(m in line.lower() for m in _OOM_MARKERS))
            return OutOfMemory(f"llama.cpp could not {what} for {self.spec.name!r}: {oom}", model=self.spec.name)
        return ModelLoadError(f"llama.cpp could not {what} for {self.spec.name!r} ({self.spec.path}): {detail[-500:]}")

    def _serve_step(self) -> bool:
        sched = self.scheduler
        assert sched is not None
        for gen in self._take(sched.free_slots()):
            sched.admit(gen)
        self._running = len(sched.slots)
        if not sched.slots:
            return False
        self.peak_batch = max(self.peak_batch, len(sched.slots))
        sched.step()
        self._running = len(sched.slots)
        return True

    def _abort_running(self, exc: GpuHostError) -> None:
        if self.scheduler is not None:
            self.scheduler.fail_all(exc)
        self._running = 0

    def _free(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None


def _meta(model: ctypes.c_void_p, key: str) -> str | None:
    size = 1 << 16
    buf = ctypes.create_string_buffer(size)
    n = lc.llama_model_meta_val_str(model, key.encode(), buf, size)
    if n < 0:
        return None
    if n >= size:
        buf = ctypes.create_string_buffer(n + 1)
        lc.llama_model_meta_val_str(model, key.encode(), buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _token_text(vocab: Vocab, token: int) -> str:
    if token < 0:
        return ""
    text = lc.llama_vocab_get_text(vocab.vocab, token)
    return text.decode("utf-8", "replace") if text else ""
