"""API keys: where they come from and how rotation reaches a running proxy.

    source = source_for(ref, session_factory)   EnvSource | FileSource | VaultSource (pluggable)
    ring = KeyRing(provider, ref, source)
    await ring.load()          read it now; False when no key is set (the provider is disabled)
    ring.key                   the current key, or None
    ring.refresh               the owner calls ring.load() this often (rotation, no restart)

Vault is read through its HTTP API, KV version 2: ``GET {VAULT_ADDR}/v1/{mount}/data/{path}`` with
``X-Vault-Token``; the answer holds the key at ``data.data.<key>``.

Every value read is registered with :func:`bus.log.register_secret`, so a log line that would carry it
is masked; nothing here logs a value, and errors name where a key lives, never what it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aiohttp

from actors.cloud_proxy.errors import SecretError
from bus.log import register_secret
from schemas.config.providers import SecretRef, VaultRef

log = logging.getLogger(__name__)


class SecretSource(Protocol):
    where: str  # for messages: "env TOGETHER_API_KEY", "file /run/keys/x", "vault secret/orchestra/openai"

    async def read(self) -> str | None:
        """The value, or None when it is not set. Raises SecretError when the source cannot be read."""


class EnvSource:
    def __init__(self, name: str) -> None:
        self.name = name
        self.where = f"env {name}"

    async def read(self) -> str | None:
        return os.environ.get(self.name, "").strip() or None


class FileSource:
    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()
        self.where = f"file {self.path}"

    async def read(self) -> str | None:
        try:
            text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretError(f"{self.where}: {exc.strerror}") from exc
        return text.strip() or None


class VaultSource:
    def __init__(self, ref: VaultRef, session: Callable[[], aiohttp.ClientSession], timeout: float = 5.0) -> None:
        self.ref, self._session, self.timeout = ref, session, timeout
        self.where = f"vault {ref.mount}/{ref.path}"

    async def read(self) -> str | None:
        addr = os.environ.get(self.ref.addr_env, "").rstrip("/")
        token = os.environ.get(self.ref.token_env, "")
        if not addr or not token:
            raise SecretError(f"{self.where}: ${self.ref.addr_env} and ${self.ref.token_env} must be set")
        register_secret(token)
        url = f"{addr}/v1/{self.ref.mount.strip('/')}/data/{self.ref.path.strip('/')}"
        try:
            async with self._session().get(
                url, headers={"X-Vault-Token": token}, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                if resp.status == 404:
                    return None
                if resp.status >= 400:
                    raise SecretError(f"{self.where}: Vault answered HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SecretError(f"{self.where}: {type(exc).__name__}") from exc
        try:
            value = body["data"]["data"].get(self.ref.key)
        except (KeyError, TypeError, AttributeError) as exc:
            raise SecretError(f"{self.where}: not a KV v2 answer") from exc
        if value is None:
            return None
        return str(value).strip() or None


def source_for(ref: SecretRef, session: Callable[[], aiohttp.ClientSession]) -> SecretSource:
    if ref.env is not None:
        return EnvSource(ref.env)
    if ref.file is not None:
        return FileSource(ref.file)
    assert ref.vault is not None  # SecretRef checks that exactly one is given
    return VaultSource(ref.vault, session)


class KeyRing:
    """The current key of one provider, re-read every ``refresh`` seconds and on demand."""

    def __init__(
        self,
        provider: str,
        source: SecretSource | None,
        refresh: float = 60.0,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.provider, self.source, self.refresh, self.on_change = provider, source, refresh, on_change
        self.key: str | None = None
        self._lock = asyncio.Lock()
        self._failing = False
        self._loaded = False

    async def load(self) -> bool:
        """Read the key now. True when it changed. A source that fails keeps the key we had."""
        if self.source is None:
            return False
        async with self._lock:
            try:
                value = await self.source.read()
            except SecretError as exc:
                if not self._failing:
                    log.warning("%s: cannot read its key (%s); keeping the one we have", self.provider, exc)
                self._failing = True
                return False
            self._failing = False
            first, self._loaded = not self._loaded, True
            if value == self.key:
                if first:
                    log.warning("%s: no API key at %s: the provider is disabled", self.provider, self.source.where)
                return False
            register_secret(value)
            had = self.key is not None
            self.key = value
        if value is None:
            log.warning("%s: no API key at %s: the provider is disabled", self.provider, self.source.where)
        elif had:
            log.info("%s: API key rotated (from %s)", self.provider, self.source.where)
        else:
            log.info("%s: API key loaded from %s", self.provider, self.source.where)
        if self.on_change is not None:
            await self.on_change(value is not None)
        return True
