"""The budget_guard actor: the one writer of the spend ledger (stream LEDGER) and of ``orch_tiers``.

    orch.svc.budget.reserve    check every hard limit and hold the worst case, atomically (or a lease)
    orch.svc.budget.release    drop a hold the router will not use (a lease: its undrawn remainder)
    orch.svc.budget.summary    the live ledger
    orch.result.>              settle: charge each stored result once, free its hold
    orch.cmd.tier.*            SetTier: write orch_tiers, emit tier.disabled / tier.enabled

One instance writes: it holds the writer lease in KV ``orch_locks`` (bus/lease.py); a second one
started meanwhile stands by until the lease lapses, then takes over. On start (once it holds the lease)
it rebuilds the ledger from LEDGER, then serves; an entry that does not decode is dead-lettered
(``orch.dlq.LEDGER`` and a ``deadletter`` event), never folded in. Holds are bounded in time and size
(``budgets.max_hold``, ``max_hold_usd``) and a charge is the result's usage at the configured price,
capped by the hold it settles, whatever cost the result claims. A hold expires only once its RESULTS
consumer has charged every result stored before the hold's expiry (``watermark.py``). A cost spike
emits ``cost.spike`` and sends ``SetTier(premium, enabled=False, until=next local midnight)``;
apscheduler re-enables the tier at ``until`` (or an operator does, ``orchestra tier enable premium``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import msgspec

from actors.budget_guard import compaction, holds, journal, rebuild, snapstore, watermark
from actors.budget_guard.charges import charge_of, priced
from actors.budget_guard.foldjob import FoldJob
from actors.budget_guard.messages import (
    BudgetMsg,
    LeaseLost,
    ReenableDue,
    Release,
    Reserve,
    ResultStored,
    SnapshotTick,
    SpaceTick,
    Summary,
    SweepTick,
    TierCommand,
    WatermarkTick,
)
from actors.budget_guard.tierkeeper import TierKeeper
from actors.budget_guard.writer import LedgerWriter
from bus import subjects
from bus.actor import Actor
from bus.background import Background
from bus.consumer import OFF_PATH_CONCURRENCY, OFF_PATH_LINGER, ConsumerSpec, Delivery
from bus.errors import ServiceCallError, Transient
from bus.heap import Trimmer
from bus.lease import WriterLease
from bus.service import ServiceSpec
from bus.subjects import KVSpec, StreamSpec
from policy.ledger import Ledger
from policy.ledger_notices import Due
from policy.money import NANOS, fmt_usd
from schemas.base import Tier
from schemas.budget import (
    RELEASE_REQUEST,
    RESERVE_REQUEST,
    SUMMARY_REQUEST,
    Charged,
    LedgerEntry,
    LedgerSummary,
    Marked,
    Released,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    SummaryRequest,
)
from schemas.codec import encode
from schemas.config.root import OrchestraConfig
from schemas.errors import ErrorInfo
from schemas.events import Event

SWEEP_EVERY = 5.0
SETTLE_DURABLE = "budget_guard"
PRUNE_EVERY = 300.0
SNAPSHOT_TAIL = 100_000  # a rebuild that read this many entries after the snapshot writes one soon
SNAPSHOT_SOON = 30.0


class BudgetGuard(Actor):
    """Spend ledger, reservations, hard budgets and cost-spike remediation."""

    name = "budget_guard"

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        self.ledger = Ledger(cfg.budgets)
        self.ledger.charged_through = 0.0  # no hold expires before RESULTS is read up to a time after it
        self.tiers = TierKeeper(
            self.name, self.ledger.calendar.tz, event_once=self._event, publish=self.publish, due=self._reenable_due
        )
        self.watermark = watermark.Watermark()
        self.background = Background(self.log, "ledger work")
        self.writer = LedgerWriter(self._store, self._send)
        self.replayed = 0
        self.replay_ms = 0.0
        self._pruned = 0.0
        self.trimmer = Trimmer(map_large_from=128 * 1024)  # RSS follows the bounded ledger (bus/heap.py)
        self.lease: WriterLease | None = None
        job = FoldJob(cfg.bus, cfg.budgets, cfg.data_dir, self.role or self.name)
        self.snapshots = compaction.Snapshots(job, self.log, self.emit)  # one at a time, in a child process

    def streams(self) -> list[StreamSpec]:
        return [journal.ledger_stream(self.cfg.budgets), snapstore.snapshot_stream()]

    def buckets(self) -> list[KVSpec]:
        ttl = float(self.cfg.budgets.writer_lease)
        return [KVSpec(subjects.KV_LOCKS, "single-writer leases of singleton actors (writer: the holder)", ttl=ttl)]

    def services(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(subjects.SVC_BUDGET_RESERVE, lambda req: self.handle(Reserve(req)), RESERVE_REQUEST),
            ServiceSpec(subjects.SVC_BUDGET_RELEASE, lambda req: self.handle(Release(req)), RELEASE_REQUEST),
            ServiceSpec(subjects.SVC_BUDGET_SUMMARY, lambda req: self.handle(Summary(req)), SUMMARY_REQUEST),
        ]

    def consumers(self) -> list[ConsumerSpec]:
        defaults = self.consumer_defaults()
        return [
            ConsumerSpec(
                stream=subjects.RESULTS_STREAM,
                durable=SETTLE_DURABLE,
                subjects=(subjects.RESULT_ALL,),
                handler=self.deliver(ResultStored),
                concurrency=OFF_PATH_CONCURRENCY,
                linger=OFF_PATH_LINGER,  # in batches: acks and ledger appends share writes
                description="budget_guard: charge every stored result once",
                **defaults,
            ),
            ConsumerSpec(
                stream=subjects.COMMANDS_STREAM,
                durable="budget_guard_tiers",
                subjects=(subjects.tier_commands(),),
                handler=self.deliver(TierCommand),
                concurrency=1,  # in order: the last command wins
                description="budget_guard: tier enable / disable",
                **defaults,
            ),
        ]

    # --- lifecycle -------------------------------------------------------------------------------
    async def on_start(self) -> None:
        kv = await self.js.key_value(subjects.KV_LOCKS)
        self.lease = WriterLease(kv, self.name, holder=self.instance, ttl=float(self.cfg.budgets.writer_lease))
        await self.lease.acquire()  # a standby waits here: no service, no consumer until it holds the lease
        self.spawn("lease", self._keep_lease, restart=False)
        rejected: list[journal.Rejected] = []
        rebuilt = await rebuild.fold(self.nc, self.cfg.budgets, rejected=rejected)
        self.ledger = rebuilt.ledger
        self.ledger.charged_through = 0.0  # no hold expires before RESULTS is read up to a time after it
        self.replayed = rebuilt.tail
        self.replay_ms = rebuilt.restore_ms + rebuilt.tail_ms
        for bad in rejected:
            await self._dead_letter_entry(bad)
        if rebuilt.missing:
            self.log.error(
                "LEDGER lost %d entries between the last snapshot and its tail (aged out before a snapshot "
                "covered them): the spend rebuilt is short of them",
                rebuilt.missing,
            )
        now = time.time()
        self.ledger.expire(now)
        self.ledger.prune(now)
        self.log.info(
            "ledger rebuilt from %s + %d entries in %.0f ms: %d charges, %s, %d open reservations",
            f"snapshot @{rebuilt.snapshot.covers_seq}" if rebuilt.snapshot else "no snapshot",
            self.replayed,
            self.replay_ms,
            self.ledger.charges.count,
            fmt_usd(self.ledger.charged_total(), 6),
            len(self.ledger.reservations),
        )
        # Every ``budgets.snapshot_every``: the fold of the last snapshot and the entries after it, stored
        # as the next snapshot (a restart then reads it plus a short tail); a long tail: soon, not in an hour.
        every = float(self.cfg.budgets.snapshot_every)
        self.every("snapshots", every, SnapshotTick, first=SNAPSHOT_SOON if rebuilt.tail >= SNAPSHOT_TAIL else every)
        self.every("ledger space", compaction.EVERY, SpaceTick)  # LEDGER half full: compacted (compaction.py)
        await self.tiers.start(self.js)
        self.every("watermark", watermark.EVERY, WatermarkTick, first=0.0)
        self.every("sweep", SWEEP_EVERY, SweepTick, first=0.0)

    # --- messages --------------------------------------------------------------------------------
    async def handle(self, msg: BudgetMsg) -> Any:
        """The one entry point; a service's message returns its reply."""
        match msg:
            case ResultStored(d=d):
                await self.settle(d)
            case TierCommand(d=d):
                await self.tiers.command(d)
            case Reserve(req=req):
                return await self.reserve(req)
            case Release(req=req):
                return await self.release(req)
            case Summary(req=req):
                return await self.summary(req)
            case ReenableDue(tier=tier, until=until):
                await self.tiers.reenable(tier, until)
            case SweepTick():
                await self._sweep(time.time())
            case WatermarkTick():
                await self._follow_results()
            case SnapshotTick():
                await self.snapshot_now()
            case SpaceTick() if self.lease is not None and self.lease.held:
                await self.snapshots.keep_space(self.nc)
            case LeaseLost(reason=reason):
                self.log.error("budget_guard %s lost the writer lease: %s; it stops writing", self.instance, reason)
                self.request_exit(f"lost the writer lease: {reason}")
        return None

    async def _reenable_due(self, tier: Tier, until: float) -> None:
        await self.handle(ReenableDue(tier, until))

    async def snapshot_now(self) -> snapstore.Manifest | None:
        assert self.lease is not None
        if not self.lease.held:
            return None  # a standby, or a guard that lost its lease, writes nothing
        return await self.snapshots.write(self.nc)

    async def on_stop(self) -> None:
        self.tiers.stop()
        self.background.cancel()
        if self.lease is not None:
            await self.lease.release()  # a standby takes over at once

    async def _keep_lease(self) -> None:
        assert self.lease is not None
        await self.handle(LeaseLost(await self.lease.keep()))

    async def _dead_letter_entry(self, bad: journal.Rejected) -> None:
        """A LEDGER message that is not an entry: kept aside with the reason, announced, never applied."""
        letter = rebuild.dead_letter(bad)
        self.log.warning("ledger rebuild skipped %s (stream seq %d): %s", bad.subject, bad.seq, letter.event.reason)
        try:
            await self.publish(subjects.dead_letter(journal.STREAM), bad.data, headers=letter.headers, timeout=5.0)
        except Exception as exc:
            self.log.warning("could not dead-letter ledger seq %d: %s", bad.seq, exc)
        await self.emit(letter.event)

    # --- services --------------------------------------------------------------------------------
    async def reserve(self, req: ReserveRequest) -> ReserveReply:
        now = time.time()
        budgets = self.cfg.budgets
        limited = holds.bounded(req, now, float(budgets.max_hold), budgets.max_hold_usd)
        if isinstance(limited, str):
            self.log.info("denied %s:%d (%s %s): %s", req.request_id, req.attempt, req.tier, req.model, limited)
            return ReserveReply(granted=False, reason="hold_too_large", scope="budgets.max_hold_usd")
        req = limited
        # A lease's id is its request id (unique per router run), so its router can release it by name.
        rid = req.request_id if req.lease else f"{req.request_id}:{req.attempt}:{secrets.token_hex(4)}"
        decision = self.ledger.try_reserve(req, reservation_id=rid, now=now, disabled_tiers=self.tiers.disabled())
        remaining = None if decision.remaining is None else decision.remaining / NANOS
        if not decision.granted:
            why = f"{decision.reason} {decision.scope}"
            denied = ReserveReply(granted=False, reason=decision.reason, scope=decision.scope, remaining_usd=remaining)
            if req.lease:  # the router reserves per attempt instead: no notification for a lease
                self.log.debug("lease %s denied (%s %s): %s", req.request_id, req.tier, req.model, why)
                return denied
            self.log.info("denied %s:%d (%s %s): %s", req.request_id, req.attempt, req.tier, req.model, why)
            if decision.limit is not None:
                due = self.ledger.cap_reached(decision.limit, now)
                if due is not None and self.ledger.claim(due.key):
                    self.background.run(self._notify(due))
            return denied
        if decision.entry is not None:
            try:  # written ahead of the reply, confirmed in the background (writer.py)
                stored = await self.writer.ahead(decision.entry)
            except Exception as exc:
                self.ledger.rollback(rid)
                self.log.warning("reservation %s rolled back: the ledger could not store it (%s)", rid, exc)
                self.background.run(self.writer.append(Released(at=now, reservation_id=rid, reason="rolled_back"), 30))
                return ReserveReply(granted=False, reason="ledger_unavailable")
            if stored is not None:
                self.background.run(self.writer.confirm(stored, decision.entry))
        r = decision.reservation
        assert r is not None
        return ReserveReply(
            granted=True,
            reservation_id=r.id,
            amount_usd=r.amount / NANOS,
            remaining_usd=remaining,
            expires_at=r.expires_at,
            amount_nanos=r.amount,
        )

    async def release(self, req: ReleaseRequest) -> ReleaseReply:
        freed = self.ledger.releasable(req.reservation_id, req.amount_nanos)
        if freed is None:
            return ReleaseReply(released=False)
        r = self.ledger.reservations[req.reservation_id]
        partial = req.amount_nanos if r.lease else None
        entry = Released(at=time.time(), reservation_id=r.id, reason=req.reason or "released", amount_nanos=partial)
        try:
            await self.writer.append(entry, 2.0)
        except Exception as exc:
            info = ErrorInfo.of("unavailable", "the ledger cannot be written now; the hold expires at its deadline")
            raise ServiceCallError(info) from exc
        self.ledger.apply(entry)
        return ReleaseReply(released=True, amount_usd=freed / NANOS)

    async def summary(self, _req: SummaryRequest) -> LedgerSummary:
        return msgspec.structs.replace(
            self.ledger.summary(time.time()),
            instance=self.instance,
            disabled_tiers=sorted(self.tiers.disabled()),
            entries_replayed=self.replayed,
            replay_ms=round(self.replay_ms, 1),
        )

    # --- settlement ------------------------------------------------------------------------------
    async def settle(self, d: Delivery) -> None:
        charge = charge_of(d.subject, d.data, d.published_at)  # SchemaError: dead letter
        if self.ledger.is_charged(charge.key):
            return  # a redelivery: charged once
        charge = self.ledger.settles(charge)  # the hold it settles (its lease draw, or its reservation), claimed
        charge = priced(charge, self.cfg.models.get(charge.model or ""), self._hold_of(charge))
        try:
            await self.writer.append(charge, 10.0)
        except BaseException as exc:  # not stored (or cancelled): the hold is free to settle otherwise
            self.ledger.unclaim(charge)
            if not isinstance(exc, Exception):
                raise
            raise Transient(f"the ledger could not store charge {charge.key}: {exc}") from exc
        self.ledger.apply(charge)
        await self._fire_due(time.time())

    def _hold_of(self, c: Charged) -> int | None:
        """What was held for this charge: its lease draw, or its reservation (None: it settles none)."""
        r = self.ledger.reservations.get(c.reservation_id or "")
        if r is None:
            return None
        return c.reserved_nanos if r.lease and c.reserved_nanos else r.amount

    # --- notifications ---------------------------------------------------------------------------
    async def _fire_due(self, now: float) -> None:
        for due in self.ledger.due(now):
            if self.ledger.claim(due.key):
                await self._notify(due)

    async def _notify(self, due: Due) -> None:
        """Event first (Msg-Id: sent once), the spike's command, then the mark: a crash in between
        sends it again after the restart rather than never."""
        try:
            await self._event(due.event, f"budget:{due.key}")
            if due.spike:
                await self._spike_command(due)
            await self.writer.append(Marked(at=time.time(), key=due.key), 10.0)
        except Exception as exc:
            self.ledger.marks.discard(due.key)  # try again on the next charge or sweep
            self.log.warning("could not send %s: %s", due.key, exc)

    async def _spike_command(self, due: Due) -> None:
        spike = self.cfg.budgets.spike
        until = self.ledger.calendar.next_day_start(time.time()) if spike.reenable == "next_day" else None
        reason = f"cost spike: {getattr(due.event, 'reason', '')}"
        await self.tiers.disable(spike.disable_tier, until, reason, msg_id=f"budget:{due.key}:cmd")

    async def _event(self, event: Event, msg_id: str) -> None:
        event = msgspec.structs.replace(event, at=event.at or time.time(), source=event.source or self.name)
        await self.publish(subjects.event(event), event, msg_id=msg_id, timeout=5.0)

    # --- housekeeping ----------------------------------------------------------------------------
    async def _sweep(self, now: float) -> None:
        for r in self.ledger.expire(now):
            self.log.info("reservation %s expired unsettled (%s)", r.id, fmt_usd(r.hold, 6))
        if now - self._pruned > PRUNE_EVERY:
            self.ledger.prune(now)
            self._pruned = now
        self.trimmer.maybe(now)
        await self._fire_due(now)
        await self.tiers.sweep(now)

    async def _follow_results(self) -> None:
        """Advance ``ledger.charged_through`` as the RESULTS consumer catches up (``watermark.py``)."""
        state = await watermark.read(self.js, subjects.RESULTS_STREAM, SETTLE_DURABLE)
        through = self.watermark.observe(state) if state is not None else None
        if through is not None:
            self.ledger.charged_through = max(self.ledger.charged_through, through)

    async def _send(self, subject: str, entry: LedgerEntry, msg_id: str) -> asyncio.Future[Any]:
        """Hand the entry to the connection now; the returned future resolves with the store's ack."""
        if not self.nc.is_connected:
            raise ConnectionError("not connected to NATS")
        return await self.js.publish_async(subject, encode(entry), headers={"Nats-Msg-Id": msg_id})

    async def _store(self, subject: str, entry: LedgerEntry, msg_id: str, timeout: float) -> None:
        await self.publish(subject, entry, msg_id=msg_id, timeout=timeout)
