"""One stream reader for history: every stored message of the streams matching a subject filter in a time
window, merged in time order (``orchestra audit``, the dashboard's warm-up, the monitor's feed, benches)."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import subjects

Record = tuple[datetime, int, str, str, bytes]  # time, stream seq, stream, subject, data


async def replay(js: JetStreamContext, filters: list[str], since: datetime, until: datetime) -> list[Record]:
    """Every stored message matching the filters in [since, until], ordered by time."""
    per_stream: list[list[Record]] = []
    for spec in subjects.STREAMS:
        for f in filters:
            if any(subjects.subjects_overlap(f, s) for s in spec.subjects):
                per_stream.append(await _read(js, spec.name, f, since, until))
    merged = list(heapq.merge(*per_stream, key=lambda r: (r[0], r[2], r[1])))
    seen: set[tuple[str, int]] = set()
    out = []
    for rec in merged:  # two overlapping filters on one stream must not show a message twice
        if (rec[2], rec[1]) not in seen:
            seen.add((rec[2], rec[1]))
            out.append(rec)
    return out


async def _read(js: JetStreamContext, stream: str, subject: str, since: datetime, until: datetime) -> list[Record]:
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subject,
    )
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    records: list[Record] = []
    try:
        remaining = (await psub.consumer_info()).num_pending or 0
        while remaining > 0:
            for msg in await psub.fetch(min(remaining, 256), timeout=5):
                meta = msg.metadata
                remaining = meta.num_pending or 0
                when = meta.timestamp or datetime.now(UTC)
                if when > until:
                    remaining = 0
                    break
                records.append((when, meta.sequence.stream, stream, msg.subject, msg.data))
    finally:
        await psub.unsubscribe()
    return records
