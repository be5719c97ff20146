"""Storing ledger entries in LEDGER (each with its Msg-Id: stored once, whatever the retries).

    await writer.append(entry, timeout)    store it (retrying through server restarts) within ``timeout``
    stored = await writer.ahead(entry)     a reservation's entry, before its reply (below)
    await writer.confirm(stored, entry)    in the background: make sure an entry sent ahead is stored

A granted reservation is written ahead on the guard's connection: the entry reaches the server before
the reply does (one connection keeps its order), so a guard that dies after answering has its hold on
the bus; the store's ack is confirmed in the background, not on the request's path. Once an entry sent
ahead was not confirmed, the next reservation is stored first and answered after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from actors.budget_guard import journal
from schemas.budget import LedgerEntry

log = logging.getLogger(__name__)

RESERVE_WRITE_TIMEOUT = 1.0  # the router waits 2 s for a reservation: deny rather than keep it waiting

# (subject, entry, Msg-Id, timeout): Actor.publish; (subject, entry, Msg-Id): hand it to the connection
Store = Callable[[str, LedgerEntry, str, float], Awaitable[Any]]
Send = Callable[[str, LedgerEntry, str], Awaitable["asyncio.Future[Any]"]]


class LedgerWriter:
    def __init__(self, store: Store, send: Send) -> None:
        self.store, self.send = store, send
        self.ok = True  # False after a written-ahead entry was not confirmed: store before answering

    async def append(self, entry: LedgerEntry, timeout: float) -> None:
        subject, msg_id = journal.subject_of(entry), journal.msg_id_of(entry)
        async with asyncio.timeout(timeout):  # not wait_for: no task per entry (one per charge)
            await self.store(subject, entry, msg_id, timeout)

    async def ahead(self, entry: LedgerEntry) -> asyncio.Future[Any] | None:
        """Send the entry now; the future resolves with the store's ack (None: it is stored already)."""
        if self.ok:
            return await self.send(journal.subject_of(entry), entry, journal.msg_id_of(entry))
        await self.append(entry, RESERVE_WRITE_TIMEOUT)  # an earlier entry was not confirmed: store first
        self.ok = True
        return None

    async def confirm(self, stored: asyncio.Future[Any], entry: LedgerEntry) -> None:
        """The entry was sent ahead of a granted reply: make sure it is stored (retries are deduplicated
        by its Msg-Id). A hold that was granted is never taken back."""
        try:
            await asyncio.wait_for(stored, RESERVE_WRITE_TIMEOUT * 5)
        except Exception as exc:
            self.ok = False
            log.warning("ledger entry not confirmed (%s); storing it again", exc)
            await self.append(entry, 60.0)
