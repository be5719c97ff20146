"""The diversity_monitor actor (the paper's §9 and §10).

diversity.py    pure: unique approaches (ast structure / embeddings), AST and embedding diversity,
                family coverage, top-model share, temperature variance, the diversity score
window.py       pure: what was seen over the trailing windows, and the alert metrics over it
tally.py        pure: the bounded aggregates behind the windows (time buckets, samples, recent ids)
rules.py        pure: the alert rule engine (conditions, sustained, min_samples, alert state machine)
remediation.py  pure: the AlertHandler's plans (OOM swap, backlog load-or-overflow, cost spike)
escalation.py   pure: escalation steps, alert and digest messages, digest schedules
figures.py      pure: the figures /metrics and the digests show
reporting.py    pure: the diversity.report / diversity.low events of a window
board.py        pure: the dashboard's chart points, page state and ring buffers (points, event tail)
notify.py       webhook (Slack-compatible) and SMTP notifiers
metrics.py      Prometheus instruments and the /metrics endpoint
web.py          the dashboard on the same server: page, state, server-sent events, ack, audit, token
static/         the page itself (plain HTML, JS, CSS); uPlot is vendored by `make vendor`
embedding.py    the Embedder protocol and the offline MiniLM (weights/embedder.py)
feed.py         reading results, events and commands (live, and the replay at start)
desk.py         the I/O around alerts: events, remediation commands, notifications, digests
grading.py      phase 3's automatic grading of a sampled share of answers
reviews.py      the review queue and measured quality (orch_reviews, orch_quality)
messages.py     the actor's message union (deliveries, timers, digests)
actor.py        the actor: one handle() over messages.py; the helpers above get what they need from it
(cli/monitor.py: ``orchestra diversity`` and ``orchestra alerts``; cli/review.py: ``orchestra review``)
"""
