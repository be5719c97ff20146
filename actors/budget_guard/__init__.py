"""The budget_guard: the spend ledger, reservations, hard budgets, cost-spike remediation.

    actor.py     the actor: reserve / release / summary services, settlement from RESULTS, tier commands
    ledger.py    the ledger state machine (pure): holds, charges, expiry, idempotency, notifications
    leases.py    the router's lease book: local draws, lease sizing, renewal, retirement (pure)
    client.py    the router's side: ``BudgetClient.reserve`` (draw from a lease, or reserve the attempt)
    limits.py    budget scopes, daily / monthly windows in the configured time zone (pure)
    charges.py   what one stored result costs (pure; shared by the ledger and ``orchestra cost report``)
    tiers.py     what a SetTier command does to a tier's state (pure)
    journal.py   the LEDGER stream: entry subjects, Msg-Ids, reading it back
    report.py    cost report aggregation and the ledger comparison (pure)
    simulate.py  the paper's cost arithmetic (§1.2, §8, §11.2), checked (pure)

Exactly one budget_guard instance may run: it is the one writer of the ledger and of ``orch_tiers``.
"""
