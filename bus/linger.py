"""When a consumer off the request path asks the server for messages (``ConsumerSpec.linger`` > 0).

A consumer that folds results (the monitor, cache and guard) need not see each message the instant it is
stored. Kept waiting on an outstanding pull, it was woken by every result at the very moment the gateway
had to answer it: on a small machine three more processes competing for the cores, each request. Such a
consumer polls instead (a ``no_wait`` pull for its free slots): every ``linger`` seconds while results
keep coming, at once while polls come back full, and, after a poll that found nothing, less and less
often up to ``idle_max`` (an idle stack does not spin). Its messages are then handled, and acked, in one
batch at a moment of its own. Nothing else changes: each message is acked after its handler returned.
"""

from __future__ import annotations

POLL_IDLE_MAX = 0.25  # seconds between polls that find nothing, at most


class Poll:
    def __init__(self, every: float, idle_max: float = POLL_IDLE_MAX) -> None:
        self.every, self.idle_max = every, max(every, idle_max)
        self.interval = every
        self.sent_at = 0.0  # monotonic
        self.asked = 0  # the batch of the last poll (0: none yet)
        self.got = 0  # messages received since it was sent
        self._answered = True

    def received(self) -> None:
        self.got += 1

    def due_in(self, now: float) -> float:
        """Seconds until the next poll; called once the last one is answered (nothing outstanding)."""
        if not self._answered:  # what the last poll brought sets the pace
            self._answered = True
            if self.got >= self.asked:
                self.interval = 0.0  # full: more are waiting
            elif self.got:
                self.interval = self.every
            else:
                self.interval = min(self.idle_max, max(self.every, 2 * self.interval))
        return max(0.0, self.sent_at + self.interval - now) if self.asked else 0.0

    def sent(self, now: float, batch: int) -> None:
        self.sent_at, self.asked, self.got, self._answered = now, batch, 0, False
