"""What the monitor reads: results, failed attempts, events and commands, live or replayed at start.

``warm_up`` replays the stored history the monitor needs before its consumers start: every alert
event (the open alerts, acknowledgements, escalation steps and remediations come back), the router
overflow switches, the results of the longest metric window (or since local midnight, for the daily
spend) and the events of that window. Replayed messages update the windows but not the Prometheus
counters (those count what this process saw).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from actors.diversity_monitor.diversity import Answer
from actors.diversity_monitor.embedding import normalise
from actors.diversity_monitor.window import answers_of
from bus import subjects
from bus.replay import replay
from schemas.codec import ATTEMPT_FAILED, COMMAND, EVENT, OUTCOME
from schemas.commands import AnyCommand, SetOverflow
from schemas.errors import SchemaError
from schemas.events import AlertAcknowledged, AlertRaised, AlertResolved, Notified, Remediation

if TYPE_CHECKING:
    from actors.diversity_monitor.actor import DiversityMonitor

log = logging.getLogger(__name__)

ALERT_EVENTS = (AlertRaised, AlertResolved, AlertAcknowledged, Remediation, Notified)
EMBED_BATCH = 64
ALERT_SUBJECTS = [
    f"{subjects.PREFIX}.event.alert.>",
    f"{subjects.PREFIX}.event.remediation",
    f"{subjects.PREFIX}.event.notified",
]


async def warm_up(m: DiversityMonitor) -> None:
    started = time.monotonic()
    now_dt = datetime.now(UTC)
    now = now_dt.timestamp()
    keep = now_dt - timedelta(seconds=float(m.cfg.bus.streams.history))
    alerts = 0
    for _when, _seq, _stream, subject, data in await replay(m.js, ALERT_SUBJECTS, keep, now_dt):
        with _skip_bad(subject):
            m.engine.restore(EVENT.decode(data))
            alerts += 1
    for _when, _seq, _stream, subject, data in await replay(m.js, [f"{subjects.PREFIX}.cmd.router.>"], keep, now_dt):
        with _skip_bad(subject):
            cmd = COMMAND.decode(data)
            if isinstance(cmd, SetOverflow):
                m.apply_overflow(cmd)
    now_dt = datetime.now(UTC)
    lookback = max(m.horizon, now - m.obs.day_start(now))
    results = await replay(m.js, [subjects.RESULT_ALL], now_dt - timedelta(seconds=lookback), now_dt)
    for when, seq, _stream, subject, data in results:
        m.replayed["RESULTS"] = max(m.replayed.get("RESULTS", 0), seq)
        with _skip_bad(subject):
            await result(m, subject, data, when.timestamp(), live=False)
    events = await replay(m.js, [subjects.EVENT_ALL], now_dt - timedelta(seconds=m.horizon), datetime.now(UTC))
    for when, seq, _stream, _subject, data in events:
        m.replayed["EVENTS"] = max(m.replayed.get("EVENTS", 0), seq)
        event(m, data, when.timestamp(), live=False)
    m.obs.prune(time.time())
    log.info(
        "replayed %d results, %d events and %d alert records in %.1fs; %d alert(s) open",
        len(results),
        len(events),
        alerts,
        time.monotonic() - started,
        len(m.engine.active),
    )


@contextlib.contextmanager
def _skip_bad(subject: str) -> Iterator[None]:
    """A stored message that does not decode is skipped during replay, with a warning."""
    try:
        yield
    except SchemaError as exc:
        log.warning("skipping undecodable %s: %s", subject, exc)


async def result(m: DiversityMonitor, subject: str, data: bytes, at: float, *, live: bool) -> None:
    """A final outcome or a failed attempt (SchemaError for bytes that are neither)."""
    if subject.endswith(".failed"):
        failure = ATTEMPT_FAILED.decode(data)
        m.obs.add_failure(failure, at)
        if live:
            m.metrics.observe_failure(failure)
        _tail(m, m.board.note_outcome(failure, at), live)
        return
    outcome = OUTCOME.decode(data)
    m.obs.add_outcome(outcome, at)
    if live:
        m.metrics.observe(outcome)
        await m.grader.on_outcome(subject, outcome)  # phase 3's grading: a verdict, or an answer drawn
    _tail(m, m.board.note_outcome(outcome, at), live)
    if at < time.time() - m.horizon or _evaluation(subject):
        return  # replayed for the daily spend only, or a verdict (counted and charged, not an answer to compare)
    fresh = [a for a in answers_of(outcome, at) if m.obs.claim(a.request_id)]
    m.obs.store(await embed(m, fresh))


def _evaluation(subject: str) -> bool:
    where = subjects.parse_answer(subject)
    return where is not None and where.origin == subjects.ORIGIN_MONITOR


async def embed(m: DiversityMonitor, answers: list[Answer]) -> list[Answer]:
    """Vectors for the answers that belong to a group (only those are compared with each other)."""
    todo = [i for i, a in enumerate(answers) if a.group is not None and a.text]
    if m.embedder is None or not todo:
        return answers
    out = list(answers)
    for start in range(0, len(todo), EMBED_BATCH):
        batch = todo[start : start + EMBED_BATCH]
        try:
            async with m.embedding:  # one batch at a time: the tokenizer is not shared across threads
                vectors = normalise(await asyncio.to_thread(m.embedder.embed_sync, [answers[i].text for i in batch]))
        except Exception as exc:  # a failing embedder degrades to lexical grouping, never loses results
            log.warning("embedding %d answers failed: %s", len(batch), exc)
            return out
        for k, i in enumerate(batch):
            out[i] = replace(answers[i], vector=vectors[k].copy())  # a row of its own: no batch kept alive
    return out


def event(m: DiversityMonitor, data: bytes, at: float, *, live: bool) -> None:
    """Count an event and keep what the metrics need. Alert events are this monitor's own record
    (folded at start only); kinds this version does not know are skipped."""
    try:
        ev = EVENT.decode(data)
    except SchemaError as exc:
        log.debug("skipping an event this version cannot read: %s", exc)
        return
    if live:
        m.metrics.events.labels(str(type(ev).__struct_config__.tag)).inc()
    _tail(m, m.board.note(ev, ev.at or at), live)
    if not isinstance(ev, ALERT_EVENTS):
        m.obs.add_event(ev, ev.at or at)


def _tail(m: DiversityMonitor, line: dict[str, Any] | None, live: bool) -> None:
    """A line of the dashboard's live tail (replayed history fills the tail at start, unsent)."""
    if line is not None and live and m.dashboard is not None:
        m.dashboard.broadcast("tail", line)


def command(data: bytes) -> AnyCommand | None:
    try:
        return COMMAND.decode(data)
    except SchemaError as exc:
        log.warning("ignoring a malformed command: %s", exc)
        return None
