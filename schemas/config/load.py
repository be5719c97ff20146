"""Read a profile (a directory of YAML files, or one file), decode it, check it. Errors name the path.

A profile directory is merged into one document: every top-level key may appear in one file only.
Environment overrides, for deployment, demos and tests: ORCHESTRA_NATS_URL (comma-separated servers),
ORCHESTRA_NATS_REPLICAS (``bus.streams.replicas``: `orchestra up --cluster 3` sets both), ORCHESTRA_DATA_DIR,
ORCHESTRA_ROTATION_EVERY (a duration such as "30s": replaces the
``rotation_frequency`` of every phase that has one, so a profile rotates fast without a copy of it).
Quantisation variants registered under the data dir (``<data_dir>/models/variants.json``, written by
``orchestra model quantize``) join their models' ``variants`` (schemas/config/variants.py).
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import yaml

from schemas.config.check import problems
from schemas.config.root import OrchestraConfig
from schemas.config.units import Duration, dec_hook
from schemas.config.variants import read_registry, registered_models, registry_path

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """One or more problems in a config, each as "file: path: message"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def default_config_path() -> Path:
    """ORCHESTRA_CONFIG, else the repository's configs/local (the embedded default)."""
    env = os.environ.get("ORCHESTRA_CONFIG")
    if env:
        return Path(env)
    if (REPO_CONFIGS / "local").is_dir():
        return REPO_CONFIGS / "local"
    return Path.cwd() / "configs" / "local"


def resolve_profile(name_or_path: str | os.PathLike[str] | None) -> Path:
    """A path, or the name of a profile under the repository's configs/ ("local", "lab")."""
    if name_or_path is None:
        return default_config_path()
    path = Path(name_or_path)
    if not path.exists() and (REPO_CONFIGS / str(name_or_path)).exists():
        return REPO_CONFIGS / str(name_or_path)
    return path


def _read_documents(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged top-level mapping and, for each top-level key, the file it came from."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise ConfigError([f"{path}: no .yaml files in the profile directory"])
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError([f"{path}: no such config file or profile directory"])
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    errors: list[str] = []
    for file in files:
        try:
            doc = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            errors.append(f"{file}{where}: {problem}")
            continue
        if doc is None:
            continue
        if not isinstance(doc, dict):
            errors.append(f"{file}: the top level must be a mapping of sections")
            continue
        for key, value in doc.items():
            if key in origin:
                errors.append(f"{file}: {key}: section already defined in {origin[key]}")
                continue
            merged[key] = value
            origin[key] = str(file)
    if errors:
        raise ConfigError(errors)
    return merged, origin


def _apply_env(doc: dict[str, Any]) -> dict[str, Any]:
    servers = os.environ.get("ORCHESTRA_NATS_URL")
    if servers:
        bus = dict(doc.get("bus") or {})
        bus["servers"] = [s.strip() for s in servers.split(",") if s.strip()]
        doc["bus"] = bus
    replicas = os.environ.get("ORCHESTRA_NATS_REPLICAS", "").strip()
    if replicas:
        if not replicas.isdigit():
            raise ConfigError([f"ORCHESTRA_NATS_REPLICAS: {replicas!r}: a whole number of replicas"])
        bus = dict(doc.get("bus") or {})
        bus["streams"] = {**dict(bus.get("streams") or {}), "replicas": int(replicas)}
        doc["bus"] = bus
    data_dir = os.environ.get("ORCHESTRA_DATA_DIR")
    if data_dir:
        doc["data_dir"] = data_dir
    every = os.environ.get("ORCHESTRA_ROTATION_EVERY", "").strip()
    if every:
        try:
            seconds = Duration.parse(every)
        except ValueError as exc:
            raise ConfigError([f"ORCHESTRA_ROTATION_EVERY: {exc}"]) from exc
        if seconds <= 0:
            raise ConfigError([f"ORCHESTRA_ROTATION_EVERY: {every!r}: a rotation interval must be positive"])
        phases = doc.get("phases")
        if isinstance(phases, dict):
            doc["phases"] = {
                name: {**phase, "rotation_frequency": float(seconds)}
                if isinstance(phase, dict) and phase.get("rotation_frequency") is not None
                else phase
                for name, phase in phases.items()
            }
    return doc


def _where(origin: dict[str, str], path: str, fallback: str) -> str:
    top = path.split(".", 1)[0].split("[", 1)[0]
    return origin.get(top, fallback)


_SEGMENT = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+|\.\.\.)\]")


def _concrete(typ: Any, value: Any) -> Any:
    """Strip Optional / pick the tagged-union member that ``value`` names."""
    origin = typing.get_origin(typ)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(typ) if a is not type(None)]
        for member in members:
            config = getattr(member, "__struct_config__", None)
            if config is not None and config.tag is not None and isinstance(value, dict):
                if value.get(config.tag_field) == config.tag:
                    return member
        return members[0] if members else typ
    return typ


def _pinpoint(value: Any, typ: Any, path: str) -> str:
    """Replace msgspec's ``[...]`` (a dict entry) in ``path`` with the key of the entry that fails."""
    out: list[str] = []
    for m in _SEGMENT.finditer(path):
        typ = _concrete(typ, value)
        field, index = m.group(1), m.group(2)
        if field:
            hints = typing.get_type_hints(typ) if hasattr(typ, "__struct_fields__") else {}
            typ = hints.get(field, Any)
            value = value.get(field) if isinstance(value, dict) else None
            out.append(f".{field}")
        elif index == "..." and isinstance(value, dict):
            item_type = (typing.get_args(typ) or (Any, Any))[-1]
            for key, item in value.items():
                try:
                    msgspec.convert(item, item_type, dec_hook=dec_hook)
                except (msgspec.ValidationError, TypeError, ValueError):
                    out.append(f".{key}")
                    value, typ = item, item_type
                    break
            else:
                out.append("[...]")
        elif index is not None and index != "..." and isinstance(value, list):
            typ = (typing.get_args(typ) or (Any,))[0]
            value = value[int(index)] if int(index) < len(value) else None
            out.append(f"[{index}]")
        else:
            out.append(m.group(0))
    return "".join(out).lstrip(".")


def load_config(path: str | os.PathLike[str] | None = None, *, check: bool = True) -> OrchestraConfig:
    """Load, decode and (by default) cross-check a profile. Raises ConfigError naming every problem."""
    root = resolve_profile(path)
    doc, origin = _read_documents(root)
    doc = _apply_env(doc)
    try:
        cfg = msgspec.convert(doc, OrchestraConfig, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        text = str(exc)
        message, _, at = text.rpartition(" - at `$")
        if not at:
            raise ConfigError([f"{root}: {text}"]) from exc
        field = _pinpoint(doc, OrchestraConfig, at.rstrip("`")) if at.rstrip("`") else ""
        if message.startswith("Object missing required field"):
            where = origin.get(field.split(".")[0], str(root)) if field else str(root)
        else:
            where = _where(origin, field, str(root))
        raise ConfigError([f"{where}: {field or '(top level)'}: {message}"]) from exc
    registry = registry_path(cfg.data_dir)
    try:
        variants = read_registry(registry)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from exc
    if variants.variants:
        cfg = msgspec.structs.replace(cfg, models=registered_models(cfg.models, variants, registry.parent))
    if check:
        found = problems(cfg)
        if found:
            raise ConfigError([f"{_where(origin, p.path, str(root))}: {p}" for p in found])
    return cfg
