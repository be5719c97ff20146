"""A single-writer lease: the one instance of a singleton actor (budget_guard) that may write.

    lease = WriterLease(kv, "budget_guard", holder="host-123", ttl=15.0)
    await lease.acquire()          # returns once this instance holds it (a standby waits here)
    spawn(lease.keep)              # renews every ttl/3; returns (lost) when it could not
    await lease.release()          # on a clean stop: a standby takes over at once

The lease is a key in the KV bucket ``orch_locks`` whose entries live ``ttl`` seconds. Acquiring is a
create (stored only if the key is absent: the server decides, so two instances started together never
both win); renewing is an update against the revision this holder wrote last. A holder that cannot renew
before its lease runs out (bus outage) or finds another revision (someone took over) has lost it and
must stop writing; an instance that dies simply stops renewing, and a standby gets the key ``ttl``
seconds after the last renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


class WriterLease:
    def __init__(self, kv: KeyValue, key: str, *, holder: str, ttl: float) -> None:
        self.kv, self.key, self.holder, self.ttl = kv, key, holder, ttl
        self.revision: int | None = None
        self.renewed_at = 0.0

    @property
    def held(self) -> bool:
        return self.revision is not None and time.monotonic() - self.renewed_at < self.ttl

    async def current_holder(self) -> str | None:
        try:
            entry = await self.kv.get(self.key)
        except Exception:
            return None
        return entry.value.decode(errors="replace") if entry.value else None

    async def try_acquire(self) -> bool:
        started = time.monotonic()
        try:
            self.revision = await self.kv.create(self.key, self.holder.encode())
        except KeyWrongLastSequenceError:
            return False
        self.renewed_at = started
        return True

    async def acquire(self, poll: float | None = None) -> None:
        """Wait until this instance holds the lease (standby until then)."""
        poll = poll if poll is not None else max(0.2, self.ttl / 5)
        waiting = False
        while True:
            try:
                if await self.try_acquire():
                    return
            except (TimeoutError, ConnectionError) as exc:
                log.debug("lease %s: %s", self.key, exc)
            if not waiting:
                waiting = True
                log.info("lease %s is held by %s: standing by", self.key, await self.current_holder())
            await asyncio.sleep(poll)

    async def keep(self) -> str:
        """Renew until the lease is lost; returns why."""
        period = self.ttl / 3
        while True:
            await asyncio.sleep(period)
            started = time.monotonic()
            try:
                self.revision = await self.kv.update(self.key, self.holder.encode(), last=self.revision)
                self.renewed_at = started
            except KeyWrongLastSequenceError:
                self.revision = None
                return f"another instance holds the lease {self.key} now"
            except Exception as exc:  # the bus is away: keep trying while the lease lasts
                if time.monotonic() - self.renewed_at >= self.ttl:
                    self.revision = None
                    return f"could not renew the lease {self.key} for {self.ttl:g}s ({type(exc).__name__})"

    async def release(self) -> None:
        if self.revision is None:
            return
        revision, self.revision = self.revision, None
        try:
            await self.kv.delete(self.key, last=revision)
        except Exception as exc:  # it lapses by itself after ttl
            log.debug("lease %s not released: %s", self.key, exc)
