"""Measured quality and the review queue, pure: what a check or a decision does to the records of the
``orch_quality`` and ``orch_reviews`` buckets (the I/O is reviews.py).

    checked(q, model, passed, window, now, compared=, evaluated=, event_seq=) -> ModelQuality
                                                                         one premium comparison, review
                                                                         decision or evaluator verdict
    skipped(q, model, reason, now, event_seq) -> ModelQuality            a validation that did not happen
    queued(escalated, now) -> ReviewItem                                 an escalation enters the queue
    decide(item, cmd, now) -> (ReviewItem, ReviewDecided) | str          a decision, or why it is refused

Each check is 1.0 (passed: agreed with premium, the reviewer chose this model's answer, or the phase's
evaluator scored it 4 or 5) or 0.0; a
model's measured quality is the mean of its last ``window`` checks on the 0..10 scale of the configured
ranks. The router uses it once ``min_samples`` checks exist (router.validation).
"""

from __future__ import annotations

import msgspec

from schemas.commands import DecideReview
from schemas.events import Escalated, ReviewDecided
from schemas.review import ModelQuality, ReviewItem

SCALE = 10.0  # the configured quality ranks run 1..10


def _measure(recent: list[float]) -> float | None:
    return round(SCALE * sum(recent) / len(recent), 3) if recent else None


def checked(
    q: ModelQuality | None,
    model: str,
    passed: bool,
    window: int,
    now: float,
    *,
    compared: bool,
    evaluated: bool = False,
    event_seq: int = 0,
) -> ModelQuality:
    """One check of ``model``: a premium comparison (``compared``), an evaluator's verdict (``evaluated``)
    or a review decision (neither)."""
    q = q or ModelQuality(model=model)
    recent = [*q.recent, 1.0 if passed else 0.0][-window:]
    reviewed = not compared and not evaluated
    return msgspec.structs.replace(
        q,
        recent=recent,
        measured=_measure(recent),
        compared=q.compared + int(compared),
        agreed=q.agreed + int(compared and passed),
        accepted=q.accepted + int(reviewed and passed),
        rejected=q.rejected + int(reviewed and not passed),
        evaluated=q.evaluated + int(evaluated),
        approved=q.approved + int(evaluated and passed),
        last_seq=max(q.last_seq, event_seq),
        updated_at=now,
    )


def skipped(q: ModelQuality | None, model: str, reason: str, now: float, event_seq: int) -> ModelQuality:
    q = q or ModelQuality(model=model)
    counts = {**q.skipped, reason: q.skipped.get(reason, 0) + 1}
    return msgspec.structs.replace(q, skipped=counts, last_seq=max(q.last_seq, event_seq), updated_at=now)


def queued(ev: Escalated, now: float) -> ReviewItem:
    return ReviewItem(
        request_id=ev.request_id,
        queued_at=ev.at or now,
        consistency=ev.consistency,
        threshold=ev.threshold,
        prompt=ev.prompt,
        responses=ev.responses,
        winner=ev.winner,
    )


def decide(item: ReviewItem, cmd: DecideReview, now: float) -> tuple[ReviewItem, ReviewDecided] | str:
    """Accept: the chosen answer (default: the vote's winner) is right. Reject: the vote's answer is
    wrong; the reviewer may name the right one among the others (``answer``) or write it (``text``).
    Credited: the models that gave the answer named right; debited: every other model that answered."""
    if item.status != "pending":
        return f"review {item.request_id} was {item.status} already"
    models = [r.provenance.model for r in item.responses]
    answer = cmd.answer
    if answer is not None and not 0 <= answer < len(models):
        return f"review {item.request_id} has answers 0..{len(models) - 1}, not {answer}"
    if cmd.verdict == "accept":
        answer = item.winner if answer is None else answer
        if answer is None:
            return f"review {item.request_id}: name the answer to accept (--answer N)"
    credited: list[str] = []
    if answer is not None:
        chosen = item.responses[answer].text
        credited = sorted({m for m, r in zip(models, item.responses, strict=True) if r.text == chosen})
    debited = sorted(set(models) - set(credited))
    status = "accepted" if cmd.verdict == "accept" else "rejected"
    decided = msgspec.structs.replace(
        item, status=status, answer=answer, text=cmd.text, decided_by=cmd.by, decided_at=cmd.at or now
    )
    event = ReviewDecided(
        request_id=item.request_id,
        verdict=cmd.verdict,
        answer=answer,
        text=cmd.text,
        credited=credited,
        debited=debited,
        by=cmd.by,
    )
    return decided, event
