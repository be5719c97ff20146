"""cards (GPUs, or a CPU with a memory budget), hosts (one gpu_host process each), storage tiers."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from schemas.config.base import Cfg
from schemas.config.units import ByteSize, Duration


class CardCfg(Cfg, frozen=True, kw_only=True):
    device: Literal["cpu", "cuda", "metal"]
    memory: ByteSize  # VRAM, or the RAM budget of a CPU "card"
    index: Annotated[int, Meta(ge=0)] = 0  # CUDA device index on its machine
    machine: str = "localhost"
    model: str = ""  # "Tesla P40"
    watts: Annotated[float, Meta(ge=0)] = 0.0  # board power under load, for the electricity cost
    reserved: str | None = None  # e.g. "CET training": never used for inference


class HostCfg(Cfg, frozen=True, kw_only=True):
    """One gpu_host process: it owns these cards (several = a card group for split models)."""

    cards: Annotated[list[str], Meta(min_length=1)]
    machine: str = "localhost"
    n_threads: Annotated[int, Meta(ge=1)] | None = None
    n_threads_batch: Annotated[int, Meta(ge=1)] | None = None
    overhead: ByteSize = ByteSize(0)  # per loaded model (CUDA context, scratch buffers)
    heartbeat: Duration = Duration(2)
    concurrency: Annotated[int, Meta(ge=1)] = 16  # dispatches taken at once (batched per model)


class StorageCfg(Cfg, frozen=True, kw_only=True):
    path: str
    read_mb_s: Annotated[float, Meta(gt=0)] | None = None
    description: str = ""
