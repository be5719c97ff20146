"""The LEDGER stream: where ledger entries are stored and how they are read back.

    orch.ledger.reserved | released | charged | marked      one subject per entry kind
    Nats-Msg-Id  res:<reservation id> | rel:<reservation id> | chg:<charge key> | mark:<key>

The Msg-Ids make a retried append store once. The stream keeps ``budgets.ledger_history`` (more
than a month, for monthly budgets), longer than the other streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bus import subjects
from bus.subjects import StreamSpec
from schemas.budget import LEDGER_ENTRY, Charged, LedgerEntry, Marked, Released, Reserved
from schemas.config.ops import BudgetsCfg

STREAM = "LEDGER"
BATCH = 2048


def ledger_stream(cfg: BudgetsCfg) -> StreamSpec:
    return StreamSpec(
        STREAM,
        [subjects.LEDGER_ALL],
        "budget_guard's spend ledger: reservations, releases, charges, notifications (one writer)",
        max_age=float(cfg.ledger_history),
    )


def subject_of(entry: LedgerEntry) -> str:
    return f"{subjects.PREFIX}.ledger.{type(entry).__struct_config__.tag}"


def msg_id_of(entry: LedgerEntry) -> str:
    match entry:
        case Reserved():
            return f"res:{entry.reservation_id}"
        case Released():
            return f"rel:{entry.reservation_id}"
        case Charged():
            return f"chg:{entry.key}"
        case Marked():
            return f"mark:{entry.key}"
    raise TypeError(f"not a ledger entry: {type(entry).__name__}")  # pragma: no cover


async def read_entries(js: JetStreamContext) -> AsyncIterator[LedgerEntry]:
    """Every stored entry, in order. Nothing if the stream does not exist (yet)."""
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return
    if not info.state.messages:
        return
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subjects.LEDGER_ALL,
    )
    psub = await js.pull_subscribe(subjects.LEDGER_ALL, stream=STREAM, config=config)
    try:
        remaining = (await psub.consumer_info()).num_pending or 0
        while remaining > 0:
            for msg in await psub.fetch(min(remaining, BATCH), timeout=10):
                remaining = msg.metadata.num_pending or 0
                yield LEDGER_ENTRY.decode(msg.data)
    finally:
        await psub.unsubscribe()
