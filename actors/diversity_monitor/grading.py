"""Phase 3's automatic grading: the current phase's first evaluator scores a sampled share of generator
answers, off the hot path (the diversity_monitor asks it after the answer was served).

    result on orch.result.<origin>.<id>  --(phase names evaluators, id drawn by evaluate_share)-->
    evaluation request on orch.request.low.mon.<eval id>  (policy/evaluation.py: rubric + JSON grammar)
    its result on orch.result.mon.<eval id>  -->  evaluation.scored event, orchestra_evaluator_score{model},
                                                  a check in orch_quality (score >= 4 passes)

The draw is deterministic by request id; a redelivered result is not asked about twice (the last
``REMEMBERED`` ids asked about are kept). Never graded: the
monitor's own evaluation results (origin ``mon``: no loops), an answer of one of the phase's evaluators
(no self-grading), cached answers, a fan-out's combined result (its children are graded one by one),
a premium validation's shadow (``<id>-pv``), errors and empty answers. At most ``MAX_IN_FLIGHT``
evaluations wait at a time; a drawn answer beyond that is dropped and counted
(orchestra_evaluations_total{result="dropped"}). Verdicts are read from the RESULTS stream the monitor
consumes anyway; the waiting list is in memory (a restart forgets it: late verdicts are then ignored,
counted as ``unknown``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from actors.diversity_monitor.metrics import Metrics
from bus import subjects
from policy.evaluation import EvaluationError, Verdict, evaluation_request, evaluators, read_verdict
from policy.validation import SHADOW_SUFFIX
from schemas.base import Priority
from schemas.codec import REQUEST
from schemas.config.root import OrchestraConfig
from schemas.errors import SchemaError
from schemas.events import EvaluationScored, Event
from schemas.request import GenerateRequest
from schemas.result import GenerateResult, Outcome

log = logging.getLogger(__name__)

ORIGIN = subjects.ORIGIN_MONITOR
MAX_IN_FLIGHT = 4  # evaluations waiting for their verdict at a time
AGREE_AT = 4  # a score of 4 or 5 counts as a passed check in the measured quality
TIMEOUT_S = 120.0  # an evaluation's own deadline (a verdict later than that is not waited for)
REMEMBERED = 1024  # answers asked about lately: a redelivered result is not graded twice
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low", "batch")


def drawn(request_id: str, share: float) -> bool:
    """Deterministic by request id: the same result is drawn (or not) on every delivery."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(b"evaluate:" + request_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 < share


def plan(outcome: Outcome, origin: str, cfg: OrchestraConfig, phase: str) -> str | None:
    """The evaluator that grades this result now, or None (not drawn, or never graded: see above)."""
    if origin == ORIGIN or not isinstance(outcome, GenerateResult):
        return None
    if outcome.cached or outcome.responses or not outcome.text.strip():
        return None
    if outcome.request_id.endswith(SHADOW_SUFFIX):  # a premium validation's shadow: a check, served to no one
        return None
    p = cfg.phases.get(phase)
    names = evaluators(cfg, phase)
    if p is None or not names or outcome.model in names:  # an evaluator never grades an evaluator's answer
        return None
    return names[0] if drawn(outcome.request_id, p.evaluate_share) else None


def agreed(verdict: Verdict) -> bool:
    return verdict.score >= AGREE_AT


def task_text(request: GenerateRequest) -> str:
    """What the generator was asked: the last user turn (or the completion prompt)."""
    if request.messages:
        users = [m.content for m in request.messages if m.role == "user"]
        return users[-1] if users else request.messages[-1].content
    return request.prompt or ""


@dataclass(frozen=True)
class Waiting:
    request_id: str  # the graded answer's
    model: str
    evaluator: str
    deadline: float


class Grader:
    """The monitor's side: draw, ask, wait (bounded), record. It gets what it needs from the monitor:

    ``phase()`` the current phase's name; ``get_last_msg(stream, subject)`` JetStream's (the graded request);
    ``publish(subject, obj, msg_id=...)``; ``emit(event)``; ``check(model, passed, compared=, evaluated=)``
    the measured quality's record of a verdict."""

    def __init__(
        self,
        cfg: OrchestraConfig,
        metrics: Metrics,
        *,
        phase: Callable[[], str],
        get_last_msg: Callable[[str, str], Awaitable[Any]],
        publish: Callable[..., Awaitable[Any]],
        emit: Callable[[Event], Awaitable[None]],
        check: Callable[..., Awaitable[None]],
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.phase = phase
        self.get_last_msg = get_last_msg
        self.publish = publish
        self.emit = emit
        self.check = check
        self.waiting: dict[str, Waiting] = {}  # evaluation request id -> what it grades
        self.asked: dict[str, None] = {}  # graded answers' request ids, oldest first (at most REMEMBERED)

    async def on_outcome(self, subject: str, outcome: Outcome) -> None:
        """A live final outcome: a verdict the monitor waits for, or an answer that may be drawn."""
        where = subjects.parse_answer(subject)
        if where is None:
            return
        if where.origin == ORIGIN:
            await self.verdict(where.request_id, outcome)
            return
        evaluator = plan(outcome, where.origin, self.cfg, self.phase())
        if evaluator is not None and isinstance(outcome, GenerateResult):
            await self.ask(outcome, where.origin, evaluator)

    async def ask(self, result: GenerateResult, origin: str, evaluator: str) -> None:
        if result.request_id in self.asked:
            return  # a redelivery of an answer asked about already
        now = time.time()
        self.waiting = {k: w for k, w in self.waiting.items() if w.deadline > now}
        if len(self.waiting) >= MAX_IN_FLIGHT:
            self.metrics.evaluations.labels("dropped").inc()
            log.info("evaluation of %s dropped: %d already waiting", result.request_id, len(self.waiting))
            return
        self.asked[result.request_id] = None
        while len(self.asked) > REMEMBERED:
            del self.asked[next(iter(self.asked))]
        slot = f"asking:{result.request_id}"  # holds the place while the request is looked up (concurrent results)
        self.waiting[slot] = Waiting(result.request_id, result.model, evaluator, now + TIMEOUT_S)
        try:
            request = await self.find_request(result.parent_id or result.request_id, origin)
        finally:
            self.waiting.pop(slot, None)
        if request is None:
            self.metrics.evaluations.labels("no_request").inc()
            return
        req = evaluation_request(
            task_text(request), result.text, model=evaluator, timeout_s=TIMEOUT_S, priority="low", task=result.task
        )
        self.waiting[req.id] = Waiting(result.request_id, result.model, evaluator, req.deadline + 5.0)
        try:
            await self.publish(subjects.request(req.priority, req.id, ORIGIN), req, msg_id=req.id)
        except Exception as exc:
            self.waiting.pop(req.id, None)
            self.metrics.evaluations.labels("error").inc()
            log.warning("could not ask %s to grade %s: %s", evaluator, result.request_id, exc)

    async def find_request(self, request_id: str, origin: str) -> GenerateRequest | None:
        for priority in PRIORITIES:
            try:
                msg = await self.get_last_msg(subjects.REQUESTS_STREAM, subjects.request(priority, request_id, origin))
            except Exception:  # not found under this priority (or gone from the stream)
                continue
            try:
                return REQUEST.decode(msg.data or b"")
            except SchemaError:
                return None
        return None

    async def verdict(self, evaluation_id: str, outcome: Outcome) -> None:
        w = self.waiting.pop(evaluation_id, None)
        if w is None:
            self.metrics.evaluations.labels("unknown").inc()  # asked before a restart, or a redelivery
            return
        if not isinstance(outcome, GenerateResult):
            self.metrics.evaluations.labels("error").inc()
            log.info("evaluation of %s by %s failed: %s", w.request_id, w.evaluator, outcome.error.message)
            return
        try:
            v = read_verdict(outcome.text)
        except EvaluationError as exc:
            self.metrics.evaluations.labels("unreadable").inc()
            log.info("evaluation of %s by %s is no verdict: %s", w.request_id, w.evaluator, exc)
            return
        self.metrics.evaluations.labels("scored").inc()
        self.metrics.evaluator_score.labels(self.metrics.labels.model(w.model)).observe(v.score)
        await self.check(w.model, agreed(v), compared=False, evaluated=True)
        await self.emit(
            EvaluationScored(
                request_id=w.request_id,
                evaluation_id=evaluation_id,
                model=w.model,
                evaluator=w.evaluator,
                score=v.score,
                reason=v.reason,
                agreed=agreed(v),
            )
        )
