"""The one stream reader (bus/replay.py) on a real nats-server: windows by sequence and by time, in
order, in batches, and no consumer left behind when a reader stops early."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS

from bus import subjects
from bus.provision import provision
from bus.replay import read_batches, replay
from schemas.codec import encode
from schemas.config.bus import StreamsCfg
from schemas.events import PhaseChanged

EVENTS = [s for s in subjects.STREAMS if s.name == subjects.EVENTS_STREAM]


async def _publish(nc: NATS, n: int) -> list[datetime]:
    js = nc.jetstream()
    await provision(js, StreamsCfg(), streams=EVENTS, buckets=[])
    for i in range(n):
        await js.publish(
            subjects.event_of("phase.changed"), encode(PhaseChanged(previous=None, phase=f"p{i}", at=float(i)))
        )
    return [(await js.get_msg(subjects.EVENTS_STREAM, seq)).time for seq in range(1, n + 1)]


async def test_batches_after_a_sequence_come_in_order_and_leave_no_consumer(nc: NATS) -> None:
    """after_seq=2 over five messages, two a pull: sequences 3, 4 | 5; the reader's consumer is gone."""
    await _publish(nc, 5)
    got = [
        [m.metadata.sequence.stream for m in batch]
        async for batch in read_batches(nc, subjects.EVENTS_STREAM, subjects.EVENT_ALL, after_seq=2, batch=2)
    ]
    assert got == [[3, 4], [5]]
    assert await nc.jetstream().consumers_info(subjects.EVENTS_STREAM) == []


async def test_a_reader_closed_early_deletes_its_consumer(nc: NATS) -> None:
    """Stopping after the first batch (aclosing) removes the ephemeral consumer at once."""
    await _publish(nc, 4)
    async with contextlib.aclosing(read_batches(nc, subjects.EVENTS_STREAM, subjects.EVENT_ALL, batch=1)) as reader:
        async for batch in reader:
            assert batch[0].metadata.sequence.stream == 1
            break
    assert await nc.jetstream().consumers_info(subjects.EVENTS_STREAM) == []


async def test_replay_returns_the_time_window_in_order(nc: NATS) -> None:
    """replay(since, until) holds exactly the messages stored in the window, oldest first."""
    times = await _publish(nc, 5)
    since, until = times[0] + (times[1] - times[0]) / 2, times[3] + (times[4] - times[3]) / 2  # between messages
    records = await replay(nc.jetstream(), [subjects.EVENT_ALL], since, until)
    assert [r[1] for r in records] == [2, 3, 4]
    assert [r[0] for r in records] == sorted(r[0] for r in records)
    everything = await replay(nc.jetstream(), [subjects.EVENT_ALL], times[0] - timedelta(seconds=1), datetime.now(UTC))
    assert [r[1] for r in everything] == [1, 2, 3, 4, 5]
    assert await nc.jetstream().consumers_info(subjects.EVENTS_STREAM) == []
