"""Memory measured on the device: NVML (the ``nvidia-ml-py`` package, ``import pynvml``) for CUDA cards.

    reader = DeviceMemory.open()                 # None where there is no NVML library or no NVIDIA card
    reader.read(0)                               # Reading(total=..., used=..., free=...) of CUDA device 0
    reconcile(booked=..., reading=..., budget=...)   -> (total, used): pure

The host's bookkeeping (what it loaded, as planned) is reconciled with the reading per card: the smaller free
memory wins (the larger use), so memory another process took on a shared card (a training job, a second
server, the CUDA context) counts before an OOM shows it; and the card's total is the smaller of its
configured budget and what the device reports. A
CPU "card" (a RAM budget) keeps the bookkeeping. The NVML module is injected (``DeviceMemory(module)``) so
the reading is tested without a GPU; the real one is ``pynvml``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Nvml(Protocol):
    """The part of pynvml this module uses."""

    def nvmlInit(self) -> None: ...  # noqa: N802 - NVML's own names
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # noqa: N802


@dataclass(frozen=True)
class Reading:
    total: int
    used: int
    free: int


class DeviceMemory:
    """Readings of CUDA devices by index (thread-safe; NVML calls take microseconds)."""

    def __init__(self, nvml: Nvml | ModuleType) -> None:
        self.nvml: Any = nvml
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}
        self.count = int(self.nvml.nvmlDeviceGetCount())

    @classmethod
    def open(cls, nvml: Nvml | ModuleType | None = None) -> DeviceMemory | None:
        """Initialise NVML; None (and one log line) where it cannot: no library, no driver, no card."""
        if nvml is None:
            try:
                import pynvml as nvml_module
            except ImportError:
                log.info("device memory: pynvml is not installed (pip install nvidia-ml-py); bookkeeping only")
                return None
            nvml = nvml_module
        try:
            nvml.nvmlInit()
            reader = cls(nvml)
        except Exception as exc:  # pynvml raises NVMLError subclasses (library not found, driver not loaded)
            log.info("device memory: NVML unavailable (%s); bookkeeping only", exc)
            return None
        if reader.count == 0:
            reader.close()
            return None
        return reader

    def read(self, index: int) -> Reading | None:
        """The memory of CUDA device ``index`` now; None when NVML cannot say (logged once per device)."""
        with self._lock:
            try:
                handle = self._handles.get(index)
                if handle is None:
                    handle = self._handles[index] = self.nvml.nvmlDeviceGetHandleByIndex(index)
                info = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # NVMLError: device gone, index out of range
                if index not in self._handles or self._handles.get(index) is not None:
                    log.warning("device memory: cannot read CUDA device %d: %s", index, exc)
                self._handles[index] = None
                return None
        return Reading(total=int(info.total), used=int(info.used), free=int(info.free))

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception as exc:  # best effort at shutdown
            log.debug("nvmlShutdown: %s", exc)


def reconcile(*, booked: int, reading: Reading | None, budget: int) -> tuple[int, int]:
    """(total, used) of a card: the bookkeeping alone without a reading; with one, the smaller total (a
    budget above the device's memory cannot be used) and the smaller free memory — what the budget leaves
    after the bookkeeping, or what the device has free — so the larger use wins. A budget that is a slice
    of a card stays one: other use of the card counts only once the device is fuller than the slice allows."""
    if reading is None:
        return budget, booked
    total = min(budget, reading.total)
    free = min(total - booked, reading.free)
    return total, total - free
