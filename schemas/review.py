"""The review queue and the measured quality: records of two KV buckets, both written by the diversity_monitor.

bucket        key            record         writer
orch_reviews  <request id>   ReviewItem     diversity_monitor (from ``ensemble.escalated`` events and
                                            the operator's ``review.decide`` commands)
orch_quality  <model>        ModelQuality   diversity_monitor (from ``validation.compared`` events and
                                            review decisions); read by the router's ``quality`` strategy
"""

from __future__ import annotations

from typing import Literal

from schemas.base import Message
from schemas.result import Response

ReviewStatus = Literal["pending", "accepted", "rejected"]


class ReviewItem(Message, frozen=True, kw_only=True):
    """One escalated request waiting for (or holding) an operator's decision."""

    request_id: str
    queued_at: float
    consistency: float
    threshold: float
    prompt: str = ""
    responses: list[Response] = []
    winner: int | None = None  # the answer the vote chose
    status: ReviewStatus = "pending"
    answer: int | None = None  # the chosen answer (a decision)
    text: str | None = None  # a written answer (a decision)
    decided_by: str = ""
    decided_at: float | None = None


class ModelQuality(Message, frozen=True, kw_only=True):
    """How often a model's answers passed a check, over the last ``router.validation.window`` checks:
    agreement with a premium answer (premium validation), an operator's review decision or an evaluator's
    verdict (score >= 4 passes).

    ``recent`` holds each check as 1.0 (passed) or 0.0; ``measured`` is their mean on the models'
    quality scale (0..10), None until ``router.validation.min_samples`` checks exist."""

    model: str
    recent: list[float] = []
    measured: float | None = None
    compared: int = 0  # premium comparisons, all time
    agreed: int = 0  # of which the answers agreed
    accepted: int = 0  # review decisions that chose this model's answer
    rejected: int = 0  # review decisions that did not
    evaluated: int = 0  # verdicts of the phase's evaluator (phase 3's automatic grading), all time
    approved: int = 0  # of which scored 4 or 5
    skipped: dict[str, int] = {}  # validation skipped, by reason (budget_exceeded, ...)
    last_seq: int = 0  # the last EVENTS sequence folded in (a redelivered event is not counted twice)
    updated_at: float = 0.0

    @property
    def samples(self) -> int:
        return len(self.recent)
