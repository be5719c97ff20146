"""Per-key rate limits shared by every gateway instance: one ``orch_key_usage`` KV entry per client key,
updated by compare-and-set (the fold is :mod:`policy.keys`). A key without rate limits costs no
I/O; a key with them costs a get and a conditional put when a request starts and when it ends.

A key this gateway has just refused stays refused here, without reading its next bodies, until the
Retry-After it was given (a per-minute request or token limit; not a busy key, which a release frees):
a client that keeps sending over its limit (a hostile tenant flooding 1 MB
bodies) costs a header check per request, not a body decode and a KV round trip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from bus.subjects import kv_key
from policy import keys as keypolicy
from schemas.codec import Codec, encode
from schemas.config.actors import KeyLimits
from schemas.errors import ErrorInfo
from schemas.state import KeyUsage

log = logging.getLogger(__name__)
USAGE: Codec[KeyUsage] = Codec(KeyUsage)
MAX_HOLD_S = 60.0  # the longest a refusal is repeated without asking the shared counters again
MAX_HELD = 10_000  # keys remembered as refused (one gateway)
TRIES = 50  # compare-and-set rounds before giving up (each lost round means another gateway counted)


@dataclass
class Admission:
    key_id: str
    tokens: int


class KeyLimiter:
    def __init__(self, kv: KeyValue, instance: str) -> None:
        self.kv, self.instance = kv, instance
        self.refused_until: dict[str, tuple[float, ErrorInfo]] = {}  # key id -> (monotonic deadline, refusal)

    def still_refused(self, key_id: str) -> ErrorInfo | None:
        """The refusal this key got moments ago, while its Retry-After lasts (no I/O, no body read)."""
        held = self.refused_until.get(key_id)
        if held is None:
            return None
        until, refusal = held
        if time.monotonic() >= until:
            del self.refused_until[key_id]
            return None
        return ErrorInfo.of(refusal.code, refusal.message, retry_after_s=round(until - time.monotonic(), 3))

    def _remember(self, key_id: str, refusal: ErrorInfo) -> None:
        """Hold a per-minute refusal (requests or tokens) until its Retry-After; a request over the token
        limit on its own (no Retry-After) and a busy key (a release frees it any moment) are not held."""
        wait = min(max(refusal.retry_after_s or 0.0, 0.0), MAX_HOLD_S)
        if wait > 0:
            if len(self.refused_until) >= MAX_HELD:  # bounded: forget the oldest refusals first
                self.refused_until.pop(next(iter(self.refused_until)))
            self.refused_until[key_id] = (time.monotonic() + wait, refusal)

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
            now = time.time()
            counted, refused = keypolicy.admit(usage, limits, now=now, instance=self.instance, tokens=tokens)
            if refused is not None:
                if keypolicy.at_rate_limit(usage, limits, now=now):
                    self._remember(key_id, refused)
                return refused
            if await self._write(key, counted, revision):
                return Admission(key_id, tokens)
        return ErrorInfo.of("rate_limited", "too many concurrent requests on this key", retry_after_s=1.0)

    async def release(self, admission: Admission, used: int | None) -> None:
        """Settle a finished request's counts. Never raises: the request has been answered (and paid) already,
        so a bus that fails here costs a warning, not a 500 a client would retry (the key's in-flight count stays
        one higher until this gateway instance goes: ``policy.keys.STALE_S``)."""
        key = kv_key(admission.key_id)
        try:
            for _ in range(TRIES):
                usage, revision = await self._read(key)
                settled = keypolicy.release(
                    usage, now=time.time(), instance=self.instance, estimated=admission.tokens, used=used
                )
                if await self._write(key, settled, revision):
                    return
        except Exception as exc:
            log.warning("key %s: its in-flight count could not be settled: %s", admission.key_id, exc)
            return
        log.warning("key %s: its in-flight count could not be settled", admission.key_id)
