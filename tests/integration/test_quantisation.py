"""Quantisation variants of SmolLM2-135M made with llama.cpp's quantiser, registered, measured, and chosen by
the gpu_host's ModelManager by the memory there is — real llama.cpp, real files, no bus (events collected)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from gguf import GGUFReader

from actors.gpu_host.manager import ModelManager
from actors.gpu_host.quantise import QuantiseError, QuantSpec
from actors.gpu_host.variants import make_variant
from schemas.codec import EVENT
from schemas.config import OrchestraConfig, load_config
from schemas.config.models import PathSource
from schemas.config.variants import RegisteredVariant, Registry, read_registry, registry_path, write_registry
from schemas.events import Event, ModelLoaded, ModelUnloaded, Oom
from tests.support.gpu_host import host_profile
from weights.library import ModelLibrary

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
MIXED = QuantSpec.parse("q4_0", ["attn_.*=q8_0"])  # a 4-bit body, attention kept at 8 bits


def profile(dest: Path, data: Path, memory: str) -> Path:
    """The local profile on its own data dir: SmolLM2 with a 512-token context, one sequence."""
    overrides = {"data_dir": str(data), "models": {MODEL: {"context_length": 512, "max_batch_size": 1}}}
    return host_profile(dest, "nats://127.0.0.1:1", {}, memory=memory, overrides=overrides)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RegisteredVariant, RegisteredVariant]:
    """A plain q8_0 and a mixed q4_0 (attention at q8_0) of SmolLM2 (Q4_1), measured (and the Q4_1 too)."""
    data = tmp_path_factory.mktemp("data")
    cfg = load_config(profile(tmp_path_factory.mktemp("p") / "profile", data, "1.5GB"))
    q8 = make_variant(cfg, MODEL, QuantSpec.parse("q8_0"), allow_requantize=True, threads=2, gen_tokens=16)
    mixed = make_variant(cfg, MODEL, MIXED, allow_requantize=True, threads=2, gen_tokens=16)
    return data, q8, mixed


def test_a_plain_and_a_mixed_variant_are_made_registered_and_measured(
    made: tuple[Path, RegisteredVariant, RegisteredVariant], tmp_path: Path
) -> None:
    """Both files exist with the tensor types asked for; the registry holds size, bits, perplexity, speed,
    and the shipped Q4_1 measured the same way; a profile on that data dir lists the variants with a file
    and the model's own perplexity."""
    data, q8, mixed = made
    assert mixed.quant == "q4_0+attn-q8_0" and mixed.overrides == ["attn_.*=q8_0"]
    assert q8.made_from == mixed.made_from == "q4_1"
    assert q8.weights_bytes > mixed.weights_bytes and q8.bits > mixed.bits > 5
    types = {t.name: t.tensor_type.name for t in GGUFReader(data / "models" / mixed.file).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_output.weight"] == "Q8_0"
    assert types["blk.0.ffn_down.weight"] == "Q4_0"
    for v in (q8, mixed):
        assert v.perplexity is not None and v.perplexity > 1 and v.tokens_per_s and v.tokens_per_s > 0
        assert v.file_bytes == (data / "models" / v.file).stat().st_size
    assert q8.perplexity is not None and mixed.perplexity is not None and q8.perplexity < mixed.perplexity
    entries = read_registry(registry_path(data)).variants
    assert [(v.model, v.quant, v.made_from) for v in entries] == [
        (MODEL, "q8_0", "q4_1"),
        (MODEL, "q4_1", ""),
        (MODEL, mixed.quant, "q4_1"),
    ]
    shipped = entries[1].perplexity
    assert shipped is not None and shipped < q8.perplexity  # requantising to 8 bits adds error, never removes it
    lib = load_config(profile(tmp_path / "profile", data, "1.5GB")).local_models()[MODEL]
    assert lib.perplexity == shipped
    listed = {v.quant: v for v in lib.variants}
    assert set(listed) == {"q8_0", mixed.quant}
    source = listed["q8_0"].source
    assert isinstance(source, PathSource) and Path(source.path) == data / "models" / q8.file
    assert listed[mixed.quant].perplexity == mixed.perplexity


def test_requantising_without_the_flag_is_refused_by_llama_cpp_naming_the_flag(tmp_path: Path) -> None:
    """The shipped SmolLM2 is Q4_1: llama.cpp refuses to requantise it unless asked to."""
    cfg = load_config(profile(tmp_path / "profile", tmp_path / "data", "1.5GB"))
    with pytest.raises(QuantiseError) as err:
        make_variant(cfg, MODEL, QuantSpec.parse("q8_0"), measured=False)
    assert "requantizing from type q4_1 is disabled" in str(err.value) and "--allow-requantize" in str(err.value)
    assert not (tmp_path / "data" / "models" / MODEL / f"{MODEL}-q8_0.gguf").exists()


async def _load(cfg: OrchestraConfig, **kw: object) -> tuple[ModelManager, list[Event]]:
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    manager = ModelManager("cpu0", cfg, ModelLibrary(cfg, Path(cfg.data_dir)), emit=emit, changed=lambda: None)
    await manager.ensure_loaded(MODEL, **kw)  # type: ignore[arg-type]
    return manager, events


def unmeasured(made: tuple[Path, RegisteredVariant, RegisteredVariant], data: Path) -> Path:
    """Another data dir registering the same two files without measurements (ranked by bits then)."""
    src, q8, mixed = made
    registry = Registry()
    for e in (q8, mixed):
        registry.put(msgspec.structs.replace(e, file=str(src / "models" / e.file), perplexity=None))
    write_registry(registry_path(data), registry)
    return data


async def test_the_budget_that_only_fits_the_mixed_variant_loads_it_and_says_why(
    made: tuple[Path, RegisteredVariant, RegisteredVariant], tmp_path: Path
) -> None:
    """By bits (no measurements): 130 MB holds the mixed variant (103 MB + KV cache) but not q8_0 (143 MB):
    the mixed one is loaded, and model.loaded names it and why; with 1.5 GB q8_0 is loaded, and a
    lower-bit reload (the monitor's first OOM remedy, at most 7 bits) brings the mixed one back."""
    _, q8, mixed = made
    data = unmeasured(made, tmp_path / "data")
    tight = load_config(profile(tmp_path / "tight", data, "130MB"))
    manager, events = await _load(tight)
    try:
        assert manager.residents[MODEL].plan.variant.quant == mixed.quant
        loaded = next(e for e in events if isinstance(e, ModelLoaded))
        assert loaded.variant == mixed.quant and loaded.bytes < 130_000_000
        assert loaded.variant_reason == f"{mixed.quant}: q8_0 needs 154.8 MB; 130 MB free of 130 MB on cpu0"
        assert manager.state().models[0].variant == mixed.quant
    finally:
        await manager.close()
    roomy = load_config(profile(tmp_path / "roomy", data, "1.5GB"))
    manager, events = await _load(roomy, keep_alive="hot")
    try:
        assert [e.variant for e in events if isinstance(e, ModelLoaded)] == ["q8_0"]
        await manager.ensure_loaded(MODEL, max_bits=7.0, reason="lower-bit variant after 1 OOM(s)")
        assert manager.residents[MODEL].plan.variant.quant == mixed.quant
        assert manager.residents[MODEL].keep_alive == "hot"  # reloaded as it was kept
        assert [type(e).__name__ for e in events] == ["ModelLoaded", "ModelUnloaded", "ModelLoaded"]
        unloaded = next(e for e in events if isinstance(e, ModelUnloaded))
        assert "reload at 7 bits or fewer" in unloaded.reason
        assert "q8_0 (over the 7 bits asked)" in [e for e in events if isinstance(e, ModelLoaded)][-1].variant_reason
    finally:
        await manager.close()


async def test_measured_variants_are_ranked_by_perplexity(
    made: tuple[Path, RegisteredVariant, RegisteredVariant], tmp_path: Path
) -> None:
    """With every file measured, the shipped Q4_1 (the best perplexity: files requantised from it are never
    better) is loaded, not the 8-bit requantisation that has more bits."""
    data, _, _ = made
    manager, events = await _load(load_config(profile(tmp_path / "roomy", data, "1.5GB")))
    try:
        loaded = next(e for e in events if isinstance(e, ModelLoaded))
        assert loaded.variant == "q4_1" and loaded.variant_reason.startswith("q4_1: the most precise of 3 variants")
    finally:
        await manager.close()


def test_a_real_llama_cpp_allocation_failure_falls_back_to_a_lower_bit_variant(
    made: tuple[Path, RegisteredVariant, RegisteredVariant], tmp_path: Path
) -> None:
    """An f32 variant (540 MB) cannot be mapped under a 500 MB address-space limit: llama.cpp's load really
    fails, an oom event names f32, and the same load goes on with q8_0 (the next most precise), which fits."""
    data = unmeasured(made, tmp_path / "data")
    cfg = load_config(profile(tmp_path / "p", data, "64GB"))  # accounting admits f32: the failure is llama.cpp's
    make_variant(cfg, MODEL, QuantSpec.parse("f32"), allow_requantize=True, threads=2, measured=False)
    prof = profile(tmp_path / "profile", data, "64GB")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path.cwd()) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "LIMITED_MODULE": "tests.support.variant_load",
        "LIMITED_PREIMPORT": "actors.gpu_host.manager",
        "LIMITED_AS_HEADROOM": str(500 * 10**6),  # f32's mapping alone is 540 MB; q8_0 needs ~300 MB in all
        "MALLOC_ARENA_MAX": "1",  # no 64 MB malloc arena per thread in the address space
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.limited", str(prof), MODEL],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(lines[-1]) == {"loaded": "q8_0"}
    events = [EVENT.decode(line.encode()) for line in lines[:-1]]
    assert [type(e).__name__ for e in events] == ["Oom", "ModelLoaded"]
    oom, loaded = events
    assert isinstance(oom, Oom) and oom.variant == "f32" and "Cannot allocate memory" in oom.detail
    assert isinstance(loaded, ModelLoaded) and loaded.variant == "q8_0"
    assert loaded.variant_reason.startswith("f32 failed to allocate (")
