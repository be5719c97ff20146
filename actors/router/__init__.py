"""The router actor: policy.py (pure choice), fanout.py (pure fan-out + consensus), flow.py (request
lifecycle), view.py (live state), queues.py (backlog), actor.py (the actor)."""
