"""What the monitor reads: results, failed attempts, events and commands, live or replayed at start.

    feed = Feed(obs, metrics, board, horizon, grade=..., tail=..., embedder=...)
    replayed = await warm_up(js, feed, engine, history_s)   # {stream: last sequence the replay read}
    await feed.result(subject, data, at, live=True)         # then each live delivery the replay did not cover
    feed.event(data, at, live=True)

``warm_up`` replays the stored history the monitor needs before its consumers start: every alert
event (the open alerts, acknowledgements, escalation steps and remediations come back), the results of
the longest metric window (or since local midnight, for the daily spend) and the events of that window.
Replayed messages update the windows but not the Prometheus counters (those count what this process saw).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from actors.diversity_monitor.board import Board
from actors.diversity_monitor.diversity import MAX_GROUP, Answer
from actors.diversity_monitor.embedding import Embedder, normalise
from actors.diversity_monitor.metrics import Metrics
from actors.diversity_monitor.rules import Engine
from actors.diversity_monitor.window import Observations, answers_of
from bus import subjects
from bus.replay import replay
from policy.tokenbucket import TokenBucket
from schemas.codec import ATTEMPT_FAILED, COMMAND, EVENT, OUTCOME
from schemas.commands import AnyCommand
from schemas.errors import SchemaError
from schemas.events import AlertAcknowledged, AlertRaised, AlertResolved, Notified, Remediation
from schemas.result import Outcome

log = logging.getLogger(__name__)

ALERT_EVENTS = (AlertRaised, AlertResolved, AlertAcknowledged, Remediation, Notified)
ALERT_SUBJECTS = list(subjects.ALERT_FEED)


async def warm_up(js: JetStreamContext, feed: Feed, engine: Engine, history_s: float) -> dict[str, int]:
    """Replay what the monitor needs (see above); the last sequence read of each stream."""
    started = time.monotonic()
    now_dt = datetime.now(UTC)
    now = now_dt.timestamp()
    obs, replayed = feed.obs, {subjects.RESULTS_STREAM: 0, subjects.EVENTS_STREAM: 0}
    keep = now_dt - timedelta(seconds=history_s)
    alerts = 0
    for _when, _seq, _stream, subject, data in await replay(js, ALERT_SUBJECTS, keep, now_dt):
        with _skip_bad(subject):
            engine.restore(EVENT.decode(data))
            alerts += 1
    now_dt = datetime.now(UTC)
    lookback = max(feed.horizon, now - obs.day_start(now))
    results = await replay(js, [subjects.RESULT_ALL], now_dt - timedelta(seconds=lookback), now_dt)
    for when, seq, _stream, subject, data in results:
        replayed[subjects.RESULTS_STREAM] = max(replayed[subjects.RESULTS_STREAM], seq)
        with _skip_bad(subject):
            await feed.result(subject, data, when.timestamp(), live=False)
    events = await replay(js, [subjects.EVENT_ALL], now_dt - timedelta(seconds=feed.horizon), datetime.now(UTC))
    for when, seq, _stream, _subject, data in events:
        replayed[subjects.EVENTS_STREAM] = max(replayed[subjects.EVENTS_STREAM], seq)
        feed.event(data, when.timestamp(), live=False)
    obs.prune(time.time())
    log.info(
        "replayed %d results, %d events and %d alert records in %.1fs; %d alert(s) open",
        len(results),
        len(events),
        alerts,
        time.monotonic() - started,
        len(engine.active),
    )
    return replayed


@contextlib.contextmanager
def _skip_bad(subject: str) -> Iterator[None]:
    """A stored message that does not decode is skipped during replay, with a warning."""
    try:
        yield
    except SchemaError as exc:
        log.warning("skipping undecodable %s: %s", subject, exc)


class Feed:
    """Results, failed attempts and events into the windows (``obs``), the Prometheus counters (live only),
    the dashboard's board and live tail (``tail``), and phase 3's grading (``grade``, live answers only)."""

    def __init__(
        self,
        obs: Observations,
        metrics: Metrics,
        board: Board,
        horizon: float,
        *,
        grade: Callable[[str, Outcome], Awaitable[None]],
        tail: Callable[[dict[str, Any]], None],
        embedder: Callable[[], Embedder | None],
        embed_per_s: float = 0.0,
    ) -> None:
        self.obs, self.metrics, self.board, self.horizon = obs, metrics, board, horizon
        self.grade, self.tail, self.embedder = grade, tail, embedder
        # answers embedded per second of traffic (the results' own times, so a replay or a backlog samples
        # as the live traffic did); a burst of a whole group's sample passes at once. None: no limit
        self.allowance = TokenBucket(capacity=MAX_GROUP, rate=embed_per_s) if embed_per_s > 0 else None

    async def result(self, subject: str, data: bytes, at: float, *, live: bool) -> None:
        """A final outcome or a failed attempt (SchemaError for bytes that are neither)."""
        if subject.endswith(".failed"):
            failure = ATTEMPT_FAILED.decode(data)
            self.obs.add_failure(failure, at)
            if live:
                self.metrics.observe_failure(failure)
            self._tail(self.board.note_outcome(failure, at), live)
            return
        outcome = OUTCOME.decode(data)
        self.obs.add_outcome(outcome, at)
        if live:
            self.metrics.observe(outcome)
            await self.grade(subject, outcome)  # phase 3's grading: a verdict, or an answer drawn
        self._tail(self.board.note_outcome(outcome, at), live)
        if at < time.time() - self.horizon or _evaluation(subject):
            return  # replayed for the daily spend only, or a verdict (counted and charged, not an answer to compare)
        fresh = [a for a in answers_of(outcome, at) if self.obs.claim(a.request_id)]
        n = sum(1 for a in fresh if _embeddable(a))
        if self._allowed(n, at):
            self.obs.store(await self.embed(fresh))
            return
        self.obs.store(fresh, sample=False)  # counted, not compared: the embedding allowance is spent
        if live:
            self.metrics.unsampled.inc(n)

    def _allowed(self, n: int, at: float) -> bool:
        """Whether ``n`` answers to embed fit the allowance (all of a fan-out or none: its answers are compared
        with each other). Without an embedder (lexical figures) nothing is limited."""
        if not n or self.allowance is None or self.embedder() is None:
            return True
        return self.allowance.try_take(n, at)

    async def embed(self, answers: list[Answer]) -> list[Answer]:
        """Vectors for the answers that belong to a group (only those are compared with each other). The
        embedder's own worker embeds, in one pass, what every result handled meanwhile asks for (one hand-off
        to its thread, not one per result), and a text it embedded lately is not embedded again."""
        embedder = self.embedder()
        todo = [i for i, a in enumerate(answers) if _embeddable(a)]
        if embedder is None or not todo:
            return answers
        try:
            vectors = normalise(await embedder.embed([answers[i].text for i in todo]))
        except Exception as exc:  # a failing embedder degrades to lexical grouping, never loses results
            log.warning("embedding %d answers failed: %s", len(todo), exc)
            return answers
        out = list(answers)
        for k, i in enumerate(todo):
            out[i] = replace(answers[i], vector=vectors[k].copy())  # a row of its own: no batch kept alive
        return out

    def event(self, data: bytes, at: float, *, live: bool) -> None:
        """Count an event and keep what the metrics need. Alert events are this monitor's own record
        (folded at start only); kinds this version does not know are skipped."""
        try:
            ev = EVENT.decode(data)
        except SchemaError as exc:
            log.debug("skipping an event this version cannot read: %s", exc)
            return
        if live:
            self.metrics.events.labels(str(type(ev).__struct_config__.tag)).inc()
        self._tail(self.board.note(ev, ev.at or at), live)
        if not isinstance(ev, ALERT_EVENTS):
            self.obs.add_event(ev, ev.at or at)

    def _tail(self, line: dict[str, Any] | None, live: bool) -> None:
        """A line of the dashboard's live tail (replayed history fills the tail at start, unsent)."""
        if line is not None and live:
            self.tail(line)


def _embeddable(a: Answer) -> bool:
    return a.group is not None and bool(a.text)


def _evaluation(subject: str) -> bool:
    where = subjects.parse_answer(subject)
    return where is not None and where.origin == subjects.ORIGIN_MONITOR


def command(data: bytes) -> AnyCommand | None:
    try:
        return COMMAND.decode(data)
    except SchemaError as exc:
        log.warning("ignoring a malformed command: %s", exc)
        return None
