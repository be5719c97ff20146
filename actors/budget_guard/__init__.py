"""The budget_guard: the spend ledger, reservations, hard budgets, cost-spike remediation.

    actor.py     the actor: one handle() over messages.py (reserve / release / summary services,
                 settlement from RESULTS, tier commands, sweep / watermark / snapshot timers)
    writer.py    storing LEDGER entries (written ahead of a reservation's reply, confirmed after)
    tierkeeper.py  the writer of orch_tiers: SetTier commands, scheduled re-enables
    (the ledger fold: policy/ledger.py + policy/ledger_notices.py; leases and limits: policy/;
    the router's side: clients/budget.py)
    charges.py   what one stored result costs (pure; shared by the ledger and ``orchestra cost report``)
    tiers.py     what a SetTier command does to a tier's state (pure)
    journal.py   the LEDGER stream: entry subjects, Msg-Ids, reading it back
    report.py    cost report aggregation and the ledger comparison (pure)
    simulate.py  the paper's cost arithmetic (§1.2, §8, §11.2), checked (pure)

Exactly one budget_guard instance may run: it is the one writer of the ledger and of ``orch_tiers``.
"""
