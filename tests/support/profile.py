"""Write a copy of a profile that points at a test nats-server, with fast timings for tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from bus.server import EmbeddedNats
from schemas.config import OrchestraConfig, load_config
from schemas.config.load import REPO_CONFIGS

# The test servers that require authentication, by URL -> the directory of their users' credentials:
# a profile written for one of them names that directory, so its actors find their role's credentials.
_CREDENTIALS: dict[str, Path] = {}


def register_server(server: EmbeddedNats) -> None:
    if server.auth is not None:
        _CREDENTIALS[server.url] = server.auth.path.resolve()


FAST_BUS: dict[str, Any] = {
    "embedded": {"enabled": False},
    "tls": {"enabled": False},
    "streams": {"history": "1h", "dedupe_window": "10m", "storage": "file", "max_bytes": "1GB"},
    "consumers": {"ack_wait": "2s", "max_deliver": 3, "nak_delay": "200ms"},
    "reconnect_wait": "200ms",
    "max_reconnect_wait": "1s",
    "shutdown_grace": "3s",
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def write_profile(
    dest: Path,
    nats_url: str,
    *,
    base: str = "local",
    data_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Copy configs/<base> to dest, pointing at nats_url; ``overrides`` merge into the sections.

    Paid attempts need no budget reservation here unless a test says so
    (``budgets.require_reservation``): most tests run no budget_guard."""
    # Ephemeral ports for the monitor's and the gateway's HTTP servers unless a test names them: the suite
    # must pass while `make run` holds the default ones (9464, 8080) on the same machine.
    defaults = {"budgets": {"require_reservation": False}, "monitor": {"metrics_port": 0}, "gateway": {"port": 0}}
    overrides = _merge(defaults, overrides or {})
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(REPO_CONFIGS / base, dest)
    main = dest / "orchestra.yaml"
    doc = yaml.safe_load(main.read_text())
    doc["bus"] = _merge(_merge(doc.get("bus", {}), FAST_BUS), {"servers": [nats_url]})
    if nats_url in _CREDENTIALS:
        doc["bus"] = _merge(doc["bus"], {"auth": {"credentials_dir": str(_CREDENTIALS[nats_url])}})
    doc["data_dir"] = str(data_dir or dest.parent / "data")
    sections: dict[str, Path] = {}
    for f in dest.glob("*.yaml"):
        for key in yaml.safe_load(f.read_text()) or {}:
            sections[key] = f
    docs: dict[Path, dict[str, Any]] = {main: doc}
    for key, value in (overrides or {}).items():
        path = sections.get(key, main)
        target = docs.setdefault(path, yaml.safe_load(path.read_text()) or {})
        target[key] = _merge(target.get(key, {}), value) if isinstance(value, dict) else value
    for path, content in docs.items():
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    return dest


def keyed_profile(tmp: Path, nats_url: str, key: str, overrides: dict[str, Any]) -> Path:
    """A profile under ``tmp`` whose gateway knows one client key (``alice``), its data in ``tmp/data``."""
    data = tmp / "data"
    data.mkdir()
    (data / "keys.txt").write_text(f"alice:{key}\n")
    gateway = {"port": 0, "api_keys_file": "keys.txt", **overrides.get("gateway", {})}
    return write_profile(tmp / "profile", nats_url, data_dir=data, overrides={**overrides, "gateway": gateway})


def test_config(dest: Path, nats_url: str, **kw: Any) -> OrchestraConfig:
    return load_config(write_profile(dest, nats_url, **kw))


test_config.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test, when imported into one
