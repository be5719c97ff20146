"""The router actor: actor.py (one handle() over messages.py), flow.py (request lifecycle), pending.py
(what is in flight, settled()), fanout.py (pure fan-out plan + consensus), view.py (live state), queues.py
(backlog); the pure choice is policy/routing.py and policy/targets.py."""
