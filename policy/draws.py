"""The draws of budget leases a ledger has settled, kept as hashes (pure: no I/O).

    draws: Draws = {}                                     lease id -> {draw_id: key_hash(charge key)}
    claim(draws, lease, request_id, attempt, key) -> bool True: this charge settles that draw
    unclaim(draws, lease, request_id, attempt, key)       its entry was not stored: the draw is open again

Each (request, attempt) draw of a lease is settled by one charge: the first charge of the draw claims
it, a second outcome of the same attempt with another key does not (it is charged unreserved). A lease
lives ``budgets.leases.window`` and keeps the draws of that window until it is dropped (tens of
thousands at 1,000 req/s), so a draw is two 64-bit hashes (~120 bytes in a dict) instead of a tuple and
two strings (~280). Two draws or keys sharing a hash (~n^2 / 2^65) would be read as one.
"""

from __future__ import annotations

from policy.chargebook import key_hash

Draws = dict[str, dict[int, int]]


def draw_id(request_id: str, attempt: int) -> int:
    return key_hash(f"{request_id}:{attempt}")


def claim(draws: Draws, lease_id: str, request_id: str, attempt: int, key: str) -> bool:
    owner = key_hash(key)
    return draws.setdefault(lease_id, {}).setdefault(draw_id(request_id, attempt), owner) == owner


def unclaim(draws: Draws, lease_id: str, request_id: str, attempt: int, key: str) -> None:
    settled = draws.get(lease_id)
    draw = draw_id(request_id, attempt)
    if settled is not None and settled.get(draw) == key_hash(key):
        del settled[draw]
