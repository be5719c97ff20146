"""The gpu_host's CUDA path on a real card (run by bench/gpu_check.sh, in a venv with a CUDA llama.cpp).

    python -m bench.gpu_check --out DIR [--index 0] [--tokens 128] [--batch 8]

1. NVML: every device's total/used/free (``actors.gpu_host.devmem``), and llama.cpp's GPU offload support.
2. Both small models loaded through the gpu_host's ModelManager on CUDA card ``--index`` with every layer
   offloaded (``n_gpu_layers: -1``), the card's budget its NVML total; NVML's use before and after each
   load (the model must show on the device), the host's reconciled card state.
3. Tokens/s per model: one greedy request alone, then ``--batch`` requests decoded together.
4. OOM and its remedy: SmolLM2 is quantised to q8_0 and q4_0 with attention at q8_0 (unmeasured: ranked by
   bits), loaded hot at q8_0 on a card budget that leaves no room for Gemma; loading Gemma is refused (an
   ``oom`` event); the monitor's ``plan_oom`` on the host's state must answer ``lower_variant`` for SmolLM2,
   the host reloads it at the lower-bit variant, and Gemma then loads.
Prints a table and writes ``gpu_check.json`` to ``--out``. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from actors.diversity_monitor.remediation import plan_oom
from actors.diversity_monitor.window import OomRec
from actors.gpu_host.devmem import DeviceMemory
from actors.gpu_host.engine import GenParams
from actors.gpu_host.errors import OutOfMemory
from actors.gpu_host.manager import ModelManager
from actors.gpu_host.quantise import QuantSpec
from actors.gpu_host.variants import make_variant
from schemas.commands import LoadModel
from schemas.config import OrchestraConfig, load_config
from schemas.events import Event, ModelLoaded, Oom
from tests.support.profile import write_profile
from weights.library import ModelLibrary

MODELS = ["smollm2-135m", "gemma3-270m"]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "The three primary colours are"]
MB = 1_000_000


def profile(out: Path, name: str, index: int, memory: int, models: dict[str, Any]) -> OrchestraConfig:
    """The local profile with its one card made CUDA device ``index`` with ``memory`` bytes of budget."""
    overrides = {
        "cards": {"cpu0": {"device": "cuda", "index": index, "memory": memory, "model": "CUDA card"}},
        "hosts": {"cpu0": {"n_threads": 4}},
        "models": models,
    }
    path = write_profile(out / name, "nats://127.0.0.1:1", data_dir=out / "data", overrides=overrides)
    return load_config(path)


class Host:
    """A ModelManager with its events kept (the gpu_host actor without the bus)."""

    def __init__(self, cfg: OrchestraConfig, devices: DeviceMemory) -> None:
        self.events: list[Event] = []
        library = ModelLibrary(cfg, Path(cfg.data_dir))
        self.manager = ModelManager("cpu0", cfg, library, emit=self._emit, changed=lambda: None, devices=devices)

    async def _emit(self, event: Event) -> None:
        self.events.append(event)


async def speed(host: Host, model: str, tokens: int, batch: int) -> dict[str, Any]:
    resident = await host.manager.ensure_loaded(model)
    params = GenParams(max_tokens=tokens, temperature=0.0, seed=1)
    started = time.perf_counter()
    one = await resident.engine.submit(PROMPTS[0], params, deadline=time.time() + 300).result()
    single = one.output_tokens / (time.perf_counter() - started)
    n = min(batch, resident.plan.batch)
    started = time.perf_counter()
    gens = [resident.engine.submit(PROMPTS[i % len(PROMPTS)], params, deadline=time.time() + 300) for i in range(n)]
    done = [await g.result() for g in gens]
    together = sum(d.output_tokens for d in done) / (time.perf_counter() - started)
    return {"tok_s_single": round(single, 1), "tok_s_batched": round(together, 1), "batch": n}


class _StaticNvml:
    """--dry-run: an NVML that reports one empty 24 GB card, to run the script's own logic on a machine
    without a GPU (llama.cpp then runs on the CPU; the on-card checks fail, the rest must pass)."""

    def nvmlInit(self) -> None:  # noqa: N802
        return None

    def nvmlShutdown(self) -> None:  # noqa: N802
        return None

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        return argparse.Namespace(total=24 * 10**9, used=0, free=24 * 10**9)


def save(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=1, default=str))


async def main(args: argparse.Namespace) -> int:
    import llama_cpp as lc

    out: Path = args.out
    results: dict[str, Any] = {"checks": {}}
    failed: list[str] = []

    def check(name: str, ok: bool, detail: str) -> None:
        results["checks"][name] = {"ok": ok, "detail": detail}
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        if not ok:
            failed.append(name)

    devices = DeviceMemory.open(_StaticNvml() if args.dry_run else None)
    check("nvml", devices is not None, f"{devices.count if devices else 0} CUDA device(s) read through NVML")
    if devices is None:
        return 1
    readings = {i: devices.read(i) for i in range(devices.count)}
    results["devices"] = {i: d.__dict__ if d else None for i, d in readings.items()}
    for i, reading in readings.items():
        print(f"  device {i}: {reading}")
    check("offload", bool(lc.llama_supports_gpu_offload()), "llama.cpp built with GPU offload")
    card = readings[args.index]
    assert card is not None
    # 2-3: both models fully offloaded, speed single and batched
    everything = {m: {"keep_alive": "warm", "n_gpu_layers": -1} for m in MODELS}
    cfg = profile(out, "speed", args.index, card.total, everything)
    host = Host(cfg, devices)
    results["models"] = {}
    for model in MODELS:
        before = devices.read(args.index)
        figures = await speed(host, model, args.tokens, args.batch)
        after = devices.read(args.index)
        r = host.manager.residents[model]
        grown = (after.used - before.used) if after and before else 0
        figures.update(
            variant=r.plan.variant.quant, planned_mb=round(r.plan.bytes / MB, 1), nvml_grew_mb=round(grown / MB, 1)
        )
        results["models"][model] = figures
        on_card = grown >= r.plan.variant.weights * 0.9
        check(f"{model} on the card", on_card, f"NVML use grew {grown / MB:.0f} MB; {figures}")
    state = host.manager.state()
    results["card_state"] = [c.__dict__ if hasattr(c, "__dict__") else str(c) for c in state.cards]
    await host.manager.close()
    # 4: OOM on a budget, the lower-bit remedy, then the load that failed
    for spec in (QuantSpec.parse("q8_0"), QuantSpec.parse("q4_0", ["attn_.*=q8_0"])):
        make_variant(cfg, "smollm2-135m", spec, allow_requantize=True, measured=False, data_dir=out / "data")
    one = {"smollm2-135m": {"keep_alive": "hot", "max_batch_size": 1}, "gemma3-270m": {"max_batch_size": 1}}
    probe = Host(profile(out, "probe", args.index, card.total, one), devices)
    sizes = {}
    for model in MODELS:
        sizes[model] = (await probe.manager.ensure_loaded(model)).plan.bytes
    small = await probe.manager.ensure_loaded("smollm2-135m", max_bits=7.0)
    sizes["smollm2-135m-lower"] = small.plan.bytes
    await probe.manager.close()
    budget = sizes["smollm2-135m"] + sizes["gemma3-270m"] - (sizes["smollm2-135m"] - sizes["smollm2-135m-lower"]) // 2
    tight_cfg = profile(out, "tight", args.index, budget, one)
    tight = Host(tight_cfg, devices)
    first = await tight.manager.ensure_loaded("smollm2-135m")
    try:
        await tight.manager.ensure_loaded("gemma3-270m")
        check("oom", False, f"gemma loaded on a {budget / MB:.0f} MB budget next to smollm2 {first.plan.variant.quant}")
    except OutOfMemory as exc:
        check("oom", True, f"gemma refused next to smollm2 {first.plan.variant.quant} on {budget / MB:.0f} MB: {exc}")
    ooms = [OomRec(time.time(), "cpu0", e.card, e.model) for e in tight.events if isinstance(e, Oom)]
    remedy = plan_oom(ooms, {"cpu0": tight.manager.state()}, tight_cfg)
    check("remedy", remedy.action == "lower_variant", f"{remedy.action}: {remedy.detail}")
    for cmd in remedy.commands:
        if isinstance(cmd, LoadModel):
            tight.manager._failed.clear()  # the host holds a failed load for 5 s; the check does not wait
            await tight.manager.ensure_loaded(cmd.model, max_bits=cmd.max_bits, reason=cmd.reason)
    try:
        gemma = await tight.manager.ensure_loaded("gemma3-270m")
        beside = tight.manager.residents["smollm2-135m"].plan.variant.quant
        check("after remedy", True, f"gemma loaded ({gemma.plan.bytes / MB:.0f} MB) beside smollm2 {beside}")
    except OutOfMemory as exc:
        check("after remedy", False, str(exc))
    keys = ("model", "variant", "variant_reason", "detail")
    results["events"] = [
        {"kind": type(e).__name__, **{k: getattr(e, k) for k in keys if hasattr(e, k)}}
        for e in tight.events
        if isinstance(e, ModelLoaded | Oom)
    ]
    await tight.manager.close()
    devices.close()
    print("\n| model | variant | tok/s single | tok/s batched | batch | planned MB | NVML grew MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, f in results["models"].items():
        cols = ("variant", "tok_s_single", "tok_s_batched", "batch", "planned_mb", "nvml_grew_mb")
        cells = [model, *(f[k] for k in cols)]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    save(out / "gpu_check.json", results)
    passed = len(results["checks"]) - len(failed)
    print(f"\n{passed}/{len(results['checks'])} checks passed; results in {out}/gpu_check.json")
    return 1 if failed else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(".data/gpu_check"))
    p.add_argument("--index", type=int, default=0, help="the CUDA device to use")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dry-run", action="store_true", help="no GPU: a stand-in NVML, llama.cpp on the CPU")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("llama_cpp").setLevel(logging.ERROR)  # the quantiser and loader report every tensor
    parsed = p.parse_args()
    parsed.out.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main(parsed)))
