"""Client API keys: from the config (each key's value in the environment or a file) and from a key
file of ``id:key`` lines, re-read when it changes. The key never leaves this module; requests,
logs and budgets see only its id.

With ``require_key`` and no key configured anywhere, a key file with one fresh key is created on
first start (mode 0600) and its path is logged — not the key.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bus.log import register_secret
from schemas.config.actors import GatewayCfg, KeyLimits
from schemas.config.providers import SecretRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientKey:
    id: str
    models: tuple[str, ...] = ()  # empty: every model
    limits: KeyLimits = KeyLimits()


def read_secret(ref: SecretRef) -> str | None:
    if ref.env:
        return os.environ.get(ref.env) or None
    if ref.file:
        path = Path(ref.file).expanduser()
        return path.read_text().strip() or None if path.is_file() else None
    return None  # Vault references are resolved by the cloud_proxy's secret sources


def parse_key_file(text: str) -> dict[str, str]:
    """``id:key`` per line; blank lines and # comments ignored. Returns key -> id."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, key = line.partition(":")
        if not sep or not key_id.strip() or not key.strip():
            raise ValueError(f"line {n}: expected `id:key`")
        out[key.strip()] = key_id.strip()
    return out


class KeyStore:
    def __init__(self, cfg: GatewayCfg, data_dir: str) -> None:
        self.cfg = cfg
        self.file = Path(cfg.api_keys_file) if cfg.api_keys_file else None
        if self.file is not None and not self.file.is_absolute():
            self.file = Path(data_dir) / self.file
        self._keys: dict[str, ClientKey] = {}
        self._mtime = 0.0

    def load(self) -> None:
        keys: dict[str, ClientKey] = {}
        for k in self.cfg.api_keys:
            value = read_secret(k.secret)
            if value:
                keys[value] = ClientKey(id=k.id, models=tuple(k.models), limits=k.limits or self.cfg.key_limits)
            else:
                log.warning("API key %s: no value in its secret source; it cannot be used", k.id)
        if self.file is not None:
            if not self.file.exists() and self.cfg.require_key and not keys:
                self._create_file(self.file)
            if self.file.exists():
                self._mtime = self.file.stat().st_mtime
                for value, key_id in parse_key_file(self.file.read_text()).items():
                    keys[value] = ClientKey(id=key_id, limits=self.cfg.key_limits)
        for value in keys:
            register_secret(value)
        self._keys = keys

    def _create_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = "orch-" + secrets.token_hex(20)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Client API keys of the gateway, one `id:key` per line.\n")
            f.write(f"default:{key}\n")
        log.info("created API key file %s with key id 'default' (send it as `Authorization: Bearer <key>`)", path)

    def refresh(self) -> None:
        """Re-read the key file when it changed (called periodically)."""
        if self.file is not None and self.file.exists() and self.file.stat().st_mtime != self._mtime:
            try:
                self.load()
                log.info("API keys reloaded from %s", self.file)
            except (OSError, ValueError) as exc:
                log.warning("API key file %s not reloaded: %s", self.file, exc)

    def check(self, header: str | None) -> ClientKey | None:
        """The key for an ``Authorization: Bearer ...`` header, or None."""
        if not self.cfg.require_key:
            return ClientKey(id="anonymous", limits=self.cfg.key_limits)
        if not header or not header.startswith("Bearer "):
            return None
        given = header[7:].strip().encode("utf-8", "surrogateescape")  # a byte that is not UTF-8 matches no key
        for value, key in self._keys.items():
            if hmac.compare_digest(value.encode(), given):
                return key
        return None

    def __len__(self) -> int:
        return len(self._keys)
