"""Load one model through a ModelManager (no bus) and print every event it emits as a JSON line, then the
outcome (``{"loaded": quant}`` or ``{"error": ...}``). Run under an address-space limit for real llama.cpp
allocation failures:

    LIMITED_MODULE=tests.support.variant_load LIMITED_PREIMPORT=actors.gpu_host.manager \\
        LIMITED_AS_HEADROOM=550000000 python -m tests.support.limited PROFILE MODEL
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from actors.gpu_host.errors import GpuHostError
from actors.gpu_host.manager import ModelManager
from schemas.codec import encode
from schemas.config import load_config
from schemas.events import Event
from weights.library import ModelLibrary


async def main(profile: str, model: str) -> None:
    cfg = load_config(profile)
    host = next(iter(cfg.hosts))

    async def emit(event: Event) -> None:
        sys.stdout.buffer.write(encode(event) + b"\n")
        sys.stdout.flush()

    manager = ModelManager(host, cfg, ModelLibrary(cfg, Path(cfg.data_dir)), emit=emit, changed=lambda: None)
    try:
        resident = await manager.ensure_loaded(model)
        outcome = {"loaded": resident.plan.variant.quant}
    except GpuHostError as exc:
        outcome = {"error": str(exc)}
    print(json.dumps(outcome), flush=True)
    await manager.close(announce=False)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
