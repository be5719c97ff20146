"""Per-key rate limits shared by every gateway instance: one ``orch_key_usage`` KV entry per client key,
updated by compare-and-set (the fold is :mod:`actors.keypolicy`). A key without rate limits costs no
I/O; a key with them costs a get and a conditional put when a request starts and when it ends."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from actors import keypolicy
from bus.subjects import kv_key
from schemas.codec import Codec, encode
from schemas.config.actors import KeyLimits
from schemas.errors import ErrorInfo
from schemas.state import KeyUsage

log = logging.getLogger(__name__)
USAGE: Codec[KeyUsage] = Codec(KeyUsage)
TRIES = 50  # compare-and-set rounds before giving up (each lost round means another gateway counted)


@dataclass
class Admission:
    key_id: str
    tokens: int


class KeyLimiter:
    def __init__(self, kv: KeyValue, instance: str) -> None:
        self.kv, self.instance = kv, instance

    async def _read(self, key: str) -> tuple[KeyUsage | None, int | None]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None, None
        if entry.value is None or entry.operation in (KV_DEL, KV_PURGE):
            return None, entry.revision
        try:
            return USAGE.decode(entry.value), entry.revision
        except ValueError:
            return None, entry.revision  # garbage is overwritten

    async def _write(self, key: str, usage: KeyUsage, revision: int | None) -> bool:
        try:
            if revision is None:
                await self.kv.create(key, encode(usage))
            else:
                await self.kv.update(key, encode(usage), last=revision)
            return True
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:  # create() on an existing key: another gateway was first
            if "wrong last sequence" in str(exc).lower():
                return False
            raise

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Admission | ErrorInfo | None:
        """An Admission to release later, a 429 ErrorInfo, or None (the key has no rate limits)."""
        if not limits.counted:
            return None
        key = kv_key(key_id)
        for _ in range(TRIES):
            usage, revision = await self._read(key)
            counted, refused = keypolicy.admit(usage, limits, now=time.time(), instance=self.instance, tokens=tokens)
            if refused is not None:
                return refused
            if await self._write(key, counted, revision):
                return Admission(key_id, tokens)
        return ErrorInfo.of("rate_limited", "too many concurrent requests on this key", retry_after_s=1.0)

    async def release(self, admission: Admission, used: int | None) -> None:
        key = kv_key(admission.key_id)
        for _ in range(TRIES):
            usage, revision = await self._read(key)
            settled = keypolicy.release(
                usage, now=time.time(), instance=self.instance, estimated=admission.tokens, used=used
            )
            if await self._write(key, settled, revision):
                return
        log.warning("key %s: its in-flight count could not be settled", admission.key_id)
