"""The draws of budget leases a ledger has settled, kept as hashes (pure: no I/O).

    draws: Draws = {}                                     lease id -> {draw_id: owner_of(charge)}
    claim(draws, lease, request_id, attempt, key) -> bool True: this charge settles that draw
    unclaim(draws, lease, request_id, attempt, key)       its entry was not stored: the draw is open again

Each (request, attempt) draw of a lease is settled by one charge: the first charge of the draw claims
it, a second outcome of the same attempt with another key does not (it is charged unreserved). A lease
lives ``budgets.leases.window`` and keeps the draws of that window until it is dropped (tens of
thousands at 1,000 req/s), so a draw is a 64-bit hash and a small int (~90 bytes in a dict) instead of a
tuple and two strings (~280): its owner is 0 for the request's result (whose key is the request id), 1
for the attempt's failure (``<id>:<attempt>:failed``), which CPython keeps as shared objects, and the
key's hash for anything else. Two draws or keys sharing a hash (~n^2 / 2^65) would be read as one.
"""

from __future__ import annotations

from policy.chargebook import key_hash

Draws = dict[str, dict[int, int]]
RESULT, FAILED = 0, 1  # the usual owners of a draw


def owner_of(request_id: str, attempt: int, key: str) -> int:
    if key == request_id:
        return RESULT
    if key == f"{request_id}:{attempt}:failed":
        return FAILED
    return key_hash(key)


def draw_id(request_id: str, attempt: int) -> int:
    return key_hash(f"{request_id}:{attempt}")


def claim(draws: Draws, lease_id: str, request_id: str, attempt: int, key: str) -> bool:
    owner = owner_of(request_id, attempt, key)
    return draws.setdefault(lease_id, {}).setdefault(draw_id(request_id, attempt), owner) == owner


def unclaim(draws: Draws, lease_id: str, request_id: str, attempt: int, key: str) -> None:
    settled = draws.get(lease_id)
    draw = draw_id(request_id, attempt)
    if settled is not None and settled.get(draw) == owner_of(request_id, attempt, key):
        del settled[draw]
