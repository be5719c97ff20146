"""Adaptive quantisation on plain data: device memory from NVML (a stand-in module: no GPU here), the
registry of made variants, the choice of variant and its reason, the lower-bit OOM remedy, the planner."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.diversity_monitor.remediation import plan_oom
from actors.diversity_monitor.window import OomRec
from actors.gpu_host import devmem
from actors.gpu_host.devmem import DeviceMemory, Reading, reconcile
from actors.gpu_host.manager import ModelManager
from actors.gpu_host.quantise import QuantSpec
from policy import planner
from policy.memory import Card, Plan, Variant, plan, precision_order
from policy.phases import Want
from schemas.commands import LoadModel
from schemas.config import ConfigError, OrchestraConfig, load_config
from schemas.config.models import LocalModel, PathSource
from schemas.config.variants import RegisteredVariant, Registry, as_variant, registry_path, write_registry
from schemas.events import Event
from schemas.state import CardState, HostState, LoadedModel
from weights.library import ModelLibrary

GB = 1_000_000_000
MB = 1_000_000
NOW = 1_800_000_000.0


# --- NVML ------------------------------------------------------------------------------------------
class NvmlError(Exception):
    """What pynvml raises (NVMLError and its subclasses)."""


class FakeNvml:
    """Speaks pynvml's calls and shapes (memory info with total/used/free in bytes), for a machine whose
    devices are ``cards`` (index -> (total, used)). ``fail_init``: no driver, as pynvml raises it."""

    def __init__(self, cards: dict[int, tuple[int, int]], *, fail_init: bool = False) -> None:
        self.cards, self.fail_init = cards, fail_init
        self.calls: list[str] = []

    def nvmlInit(self) -> None:  # noqa: N802
        self.calls.append("init")
        if self.fail_init:
            raise NvmlError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:  # noqa: N802
        if index not in self.cards:
            raise NvmlError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:  # noqa: N802
        total, used = self.cards[handle[1]]
        return _MemInfo(total=total, used=used, free=total - used)


class _MemInfo(msgspec.Struct, frozen=True):
    total: int
    used: int
    free: int


def test_nvml_readings_are_per_device_index_in_bytes() -> None:
    """Reads total/used/free of each CUDA device by its index; an index NVML does not know reads None."""
    fake = FakeNvml({0: (24 * GB, 3 * GB), 1: (24 * GB, 0)})
    reader = DeviceMemory.open(fake)
    assert reader is not None and reader.count == 2
    assert reader.read(0) == Reading(total=24 * GB, used=3 * GB, free=21 * GB)
    fake.cards[0] = (24 * GB, 5 * GB)  # another process allocates: the next reading sees it
    assert reader.read(0) == Reading(total=24 * GB, used=5 * GB, free=19 * GB)
    assert reader.read(7) is None
    reader.close()
    assert fake.calls == ["init", "shutdown"]


def test_without_a_driver_or_a_card_there_is_no_reader() -> None:
    """NVML that cannot initialise (no driver) or sees no device: None, bookkeeping only."""
    assert DeviceMemory.open(FakeNvml({}, fail_init=True)) is None
    empty = FakeNvml({})
    assert DeviceMemory.open(empty) is None and empty.calls == ["init", "shutdown"]


def test_the_real_pynvml_without_a_gpu_gives_no_reader() -> None:
    """This machine has no NVIDIA driver: the real pynvml fails to initialise and the host keeps its books."""
    pytest.importorskip("pynvml")
    assert DeviceMemory.open() is None


def test_reconcile_takes_the_larger_use_and_the_smaller_total() -> None:
    assert reconcile(booked=2 * GB, reading=None, budget=24 * GB) == (24 * GB, 2 * GB)
    shared = Reading(total=24 * GB, used=10 * GB, free=14 * GB)  # a training job holds 8 GB more
    assert reconcile(booked=2 * GB, reading=shared, budget=24 * GB) == (24 * GB, 10 * GB)
    lazy = Reading(total=24 * GB, used=1 * GB, free=23 * GB)  # allocations not made yet: the books win
    assert reconcile(booked=2 * GB, reading=lazy, budget=24 * GB) == (24 * GB, 2 * GB)
    smaller = Reading(total=22 * GB, used=0, free=22 * GB)  # a budget larger than the card
    assert reconcile(booked=0, reading=smaller, budget=24 * GB) == (22 * GB, 0)
    card = Reading(total=24 * GB, used=3 * GB, free=21 * GB)  # an 8 GB slice of a card with room: the books
    assert reconcile(booked=2 * GB, reading=card, budget=8 * GB) == (8 * GB, 2 * GB)
    full = Reading(total=24 * GB, used=20 * GB, free=4 * GB)  # the card fills up beyond the slice
    assert reconcile(booked=2 * GB, reading=full, budget=8 * GB) == (8 * GB, 4 * GB)


async def _no_event(event: Event) -> None:
    return None


def _manager(cfg: OrchestraConfig, host: str, tmp_path: Path, nvml: FakeNvml | None) -> ModelManager:
    devices = DeviceMemory.open(nvml) if nvml is not None else None
    return ModelManager(host, cfg, ModelLibrary(cfg, tmp_path), emit=_no_event, changed=lambda: None, devices=devices)


def test_a_gpu_hosts_cards_count_memory_another_process_holds(tmp_path: Path) -> None:
    """m5-p40-a (P40_0 = CUDA 0, P40_1 = CUDA 1): 9 GB used on device 0 by someone else shows as used; a
    CPU host keeps its bookkeeping even with NVML present."""
    lab = load_config("lab")
    gpu = _manager(lab, "m5-p40-a", tmp_path, FakeNvml({0: (24 * GB, 9 * GB), 1: (24 * GB, 0)}))
    assert gpu.measured
    assert [(c.name, c.total, c.used) for c in gpu.cards()] == [("P40_0", 24 * GB, 9 * GB), ("P40_1", 24 * GB, 0)]
    local = load_config("local")
    cpu = _manager(local, "cpu0", tmp_path, FakeNvml({0: (24 * GB, 9 * GB)}))
    assert not cpu.measured and [c.used for c in cpu.cards()] == [0]


def test_measured_use_makes_the_host_choose_a_lower_bit_variant(tmp_path: Path) -> None:
    """codellama-7b-sized variants on one P40: FP16 (14 GB) while the card is free; with 12 GB held by a
    training job the same plan takes q8_0 and says why."""
    variants = [Variant("f16", 16, 14 * GB), Variant("q8_0", 8, 7 * GB, 0), Variant("q4_k_m", 4.5, 4 * GB, 1)]
    fake = FakeNvml({0: (24 * GB, 0), 1: (24 * GB, 0)})
    mgr = _manager(load_config("lab"), "m5-p40-a", tmp_path, fake)

    def choose() -> Plan:
        p = plan(variants, mgr.cards()[:1], kv_bytes_per_token=0, context=1, max_batch=1, overhead=600 * MB)
        assert isinstance(p, Plan)
        return p

    assert choose().variant.quant == "f16"
    assert choose().reason == "f16: the most precise of 3 variants"
    fake.cards[0] = (24 * GB, 12 * GB)
    chosen = choose()
    assert chosen.variant.quant == "q8_0"
    assert chosen.reason == "q8_0: f16 needs 14.6 GB; 12 GB free of 24 GB on P40_0"


def test_max_bits_caps_the_variant_and_is_ignored_when_nothing_is_under_it() -> None:
    variants = [Variant("f16", 16, 14 * GB), Variant("q8_0", 8, 7 * GB, 0), Variant("q4_k_m", 4.5, 4 * GB, 1)]
    card = [Card("a", 24 * GB)]
    capped = plan(variants, card, kv_bytes_per_token=0, context=1, max_batch=1, overhead=0, max_bits=8)
    assert isinstance(capped, Plan) and capped.variant.quant == "q8_0"
    assert capped.reason.startswith("q8_0: f16 (over the 8 bits asked)")
    floor = plan(variants, card, kv_bytes_per_token=0, context=1, max_batch=1, overhead=0, max_bits=2)
    assert isinstance(floor, Plan) and floor.variant.quant == "f16"


def test_measured_variants_rank_by_perplexity_and_unmeasured_ones_by_bits() -> None:
    """A q8_0 requantised from a Q4_1 has more bits but a worse perplexity: measured, the Q4_1 ranks first."""
    shipped = Variant("q4_1", 5, 96 * MB, -1, 24.57)
    q8 = Variant("q8_0", 8.5, 143 * MB, 0, 24.84)
    mixed = Variant("q4_0+attn-q8_0", 6.1, 103 * MB, 1, 27.68)
    assert [v.quant for v in precision_order([mixed, q8, shipped])] == ["q4_1", "q8_0", "q4_0+attn-q8_0"]
    unmeasured = Variant("q8_0", 8.5, 143 * MB, 0)
    assert [v.quant for v in precision_order([mixed, unmeasured, shipped])] == ["q8_0", "q4_0+attn-q8_0", "q4_1"]
    chosen = plan([mixed, q8, shipped], [Card("cpu0", GB)], kv_bytes_per_token=0, context=1, max_batch=1, overhead=0)
    assert isinstance(chosen, Plan) and chosen.reason == "q4_1: the most precise of 3 variants, perplexity 24.57"


# --- quantisation specs ----------------------------------------------------------------------------
def test_quant_specs_name_their_mixed_precision_and_refuse_bad_parts() -> None:
    assert QuantSpec.parse("Q4_K_M").label == "q4_k_m"
    mixed = QuantSpec.parse("q3_k_m", ["attn_.*=q8_0", "output=Q6_K"])
    assert mixed.label == "q3_k_m+attn-q8_0+output-q6_k"
    assert mixed.override_texts == ["attn_.*=q8_0", "output=q6_k"]
    assert QuantSpec.parse("q4_k_m", ["attn_.*=q8_0"], name="q4-attn8").label == "q4-attn8"
    for base, keep, message in [
        ("q9_x", [], "unknown quantisation 'q9_x'"),
        ("q4_k_m", ["attn"], "write PATTERN=TYPE"),
        ("q4_k_m", ["attn=q9"], "unknown ggml type 'q9'"),
        ("q4_k_m", ["attn[=q8_0"], "is not a regular expression"),
    ]:
        with pytest.raises(ValueError, match=message):
            QuantSpec.parse(base, keep)


# --- the registry in the config --------------------------------------------------------------------
def _entry(model: str, quant: str, bits: float, size: int, **kw: Any) -> RegisteredVariant:
    return RegisteredVariant(
        model=model, quant=quant, file=f"{model}/{model}-{quant}.gguf", bits=bits, weights_bytes=size,
        file_bytes=size + MB, base=quant.split("+")[0], **kw,
    )  # fmt: skip


def test_registered_variants_join_their_models_in_every_actors_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """variants.json under the data dir adds path-sourced variants (a described variant of the same quant is
    replaced by the file); entries for models the profile lacks are ignored."""
    registry = Registry()
    registry.put(_entry("llama3.1-8b", "q8_0", 8.5, 8 * GB, perplexity=6.1))
    registry.put(_entry("llama3.1-8b", "q3_k_m+attn-q8_0", 4.4, 4 * GB))
    registry.put(_entry("no-such-model", "q8_0", 8.5, GB))
    write_registry(registry_path(tmp_path), registry)
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(tmp_path))
    model = load_config("lab").models["llama3.1-8b"]
    assert isinstance(model, LocalModel)
    by_quant = {v.quant: v for v in model.variants}
    assert by_quant["q8_0"].source == PathSource(path=str(tmp_path / "models" / "llama3.1-8b/llama3.1-8b-q8_0.gguf"))
    assert by_quant["q8_0"].perplexity == 6.1 and int(by_quant["q8_0"].size) == 8 * GB
    assert by_quant["q3_k_m+attn-q8_0"].bits == 4.4
    assert [v.quant for v in model.variants].count("q8_0") == 1


def test_a_corrupt_registry_is_a_config_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = registry_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"variants": [{"model": 1}]}')
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_config("local")
    assert str(path) in str(err.value)


# --- remediation and planning ----------------------------------------------------------------------
def _with_files(cfg: OrchestraConfig, name: str, *entries: RegisteredVariant) -> OrchestraConfig:
    model = cfg.models[name]
    assert isinstance(model, LocalModel)
    extra = [v for v in model.variants if v.quant not in {e.quant for e in entries}]
    variants = [*extra, *(as_variant(e, Path("/models")) for e in entries)]
    return msgspec.structs.replace(cfg, models={**cfg.models, name: msgspec.structs.replace(model, variants=variants)})


def test_oom_remediation_reloads_the_largest_model_at_a_lower_bit_variant_first() -> None:
    """llama3.1-70b loaded at q4_k_m with a q3_k_m file made: reload it at <= 3.9 bits (the host picks the
    most precise under that), not the paper's swap to llama3.1-8b; without a lower-bit file, the swap."""
    lab = load_config("lab")
    cfg = _with_files(lab, "llama3.1-70b", _entry("llama3.1-70b", "q3_k_m", 3.9, 34 * GB))
    loaded = LoadedModel(model="llama3.1-70b", bytes=46 * GB, cards=["P40_0", "P40_1"], variant="q4_k_m", bits=4.8)
    state = HostState(
        host="m5-p40-a",
        heartbeat_at=NOW,
        models=[loaded],
        cards=[CardState(card=c, total_bytes=24 * GB, used_bytes=23 * GB) for c in ("P40_0", "P40_1")],
    )
    ooms = [OomRec(NOW + i, "m5-p40-a", "P40_0", "qwen2.5-coder-1.5b", f"r{i}") for i in range(3)]
    remedy = plan_oom(ooms, {"m5-p40-a": state}, cfg)
    assert remedy.action == "lower_variant"
    assert remedy.commands == [
        LoadModel(
            host="m5-p40-a",
            model="llama3.1-70b",
            max_bits=3.9,
            reason="lower-bit variant after 3 OOM(s) on m5-p40-a card P40_0",
        )
    ]
    assert remedy.detail == "reloading llama3.1-70b at q3_k_m (3.9 bits, was q4_k_m at 4.8) on m5-p40-a card P40_0"
    assert plan_oom(ooms, {"m5-p40-a": state}, lab).action == "swap"  # only described variants: the paper's remedy


def test_the_planner_loads_the_variant_the_reported_memory_allows() -> None:
    """llama3.1-8b with q8_0 and q4_k_m files, on the P40 pair m5-p40-a: FP16 while the cards are free; with
    20 GB of each card reported used (measured: another process) only the q4_k_m file fits, and the step
    says so."""
    lab = load_config("lab")
    name, host = "llama3.1-8b", "m5-p40-a"
    cfg = _with_files(lab, name, _entry(name, "q8_0", 8.5, 8 * GB), _entry(name, "q4_k_m", 4.8, int(4.7 * GB)))

    def load_step(used: int) -> planner.Step:
        cards = [CardState(card=c, total_bytes=24 * GB, used_bytes=used) for c in cfg.hosts[host].cards]
        states = {h: HostState(host=h, up=h == host, heartbeat_at=NOW, cards=cards) for h in cfg.hosts}
        result = planner.plan(cfg, states, [Want(name, "hot", "g", False)], {name: "hot"}, now=NOW)
        assert isinstance(result, planner.Plan), result
        return next(s for s in result.steps if s.action == "load")

    assert load_step(0).variant == "f16"
    tight = load_step(20 * GB)
    assert tight.variant == "q4_k_m" and "(q4_k_m, " in str(tight)


def test_device_memory_module_has_no_import_of_pynvml_at_load() -> None:
    """pynvml is imported only when a CUDA host opens it: CPU hosts never need the package."""
    assert "pynvml" not in devmem.__dict__


def test_the_gpu_check_script_is_valid_bash() -> None:
    """bench/gpu_check.sh runs only where a GPU is lent: here it must at least parse."""
    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
