"""The diversity reports of a window, pure: what to emit, and which tasks are low now.

    events, low = report_events(summary, window_s, threshold, low)

One ``diversity.report`` for the window overall, then one per task (the first ``MAX_TASK_REPORTS``), each
followed by a ``diversity.low`` when the task's unique approaches fell under ``threshold`` (with at least
``threshold`` answers) and it was not low at the last report already.
"""

from __future__ import annotations

from collections.abc import Set

from actors.diversity_monitor.diversity import Summary
from schemas.events import DiversityLow, DiversityReport, Event

MAX_TASK_REPORTS = 20


def report_events(
    summary: Summary, window_s: float, threshold: int, low: Set[str | None]
) -> tuple[list[Event], set[str | None]]:
    events: list[Event] = [DiversityReport(window_s=window_s, metrics=summary.overall)]
    now_low = set(low)
    for task, m in list(summary.tasks.items())[:MAX_TASK_REPORTS]:
        events.append(DiversityReport(window_s=window_s, task=task, metrics=m.as_dict()))
        is_low = threshold > 0 and m.answers >= threshold and m.unique_approaches < threshold
        if is_low and task not in now_low:
            events.append(
                DiversityLow(
                    metric="unique_approaches", value=float(m.unique_approaches), threshold=float(threshold), task=task
                )
            )
        if is_low:
            now_low.add(task)
        else:
            now_low.discard(task)
    return events, now_low
