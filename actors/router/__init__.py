"""The router actor: actor.py (one handle() over messages.py), flow.py (request lifecycle), pending.py
(what is in flight, settled()), heard.py (outcomes and failures heard; an outcome the client already has
is handled just after the answer, not beside it), fanout.py (pure fan-out plan + consensus), view.py (live
state), queues.py (backlog); the pure choice is policy/routing.py and policy/targets.py."""
