"""The router's lease book with plain data: local draws, sizing, renewal, denial back-off, retirement."""

from __future__ import annotations

from policy.leases import Key, LeaseBook, LeasePolicy
from policy.money import to_nanos
from schemas.config.ops import LeaseCfg

T0 = 1_800_000_000.0
KEY: Key = ("premium", "openai", "gpt-4o", None)
OTHER: Key = ("together", "together", "together/llama3.1-70b", "ci")
W = to_nanos(0.001)  # an attempt's worst case


def book(**cfg: object) -> LeaseBook:
    policy = LeasePolicy.of(LeaseCfg(**{"min_usd": 0.0, "max_usd": 1.0, **cfg}))  # type: ignore[arg-type]
    return LeaseBook(policy, "lease-r1-abcd")


def granted(b: LeaseBook, key: Key = KEY, *, w: int = W, deadline: float = T0 + 60, now: float = T0) -> str:
    ask = b.ask(key, w, deadline, now)
    assert ask is not None
    b.granted(key, ask, ask.amount, None, now)
    return ask.request_id


def test_attempts_draw_their_worst_case_from_the_lease_until_it_is_used_up() -> None:
    """No lease: draw() says ask. A lease of 32 worst cases serves 32 attempts locally, each given
    the lease's id and its own worst case; the 33rd must ask again."""
    b = book()
    assert b.draw(KEY, W, T0 + 60, T0) is None
    ask = b.ask(KEY, W, T0 + 60, T0)
    assert ask is not None and ask.amount == 32 * W and ask.request_id == "lease-r1-abcd-1"
    assert ask.deadline == T0 + 60 + 30  # the request's deadline + the draw window
    assert b.granted(KEY, ask, ask.amount, None, T0) is None
    held = [b.draw(KEY, W, T0 + 60, T0 + i * 0.01) for i in range(32)]
    assert held == [("lease-r1-abcd-1", W)] * 32
    assert b.draw(KEY, W, T0 + 60, T0 + 1) is None
    (lease,) = b.leases()
    assert lease.left == 0 and lease.draws == 32


def test_a_lease_serves_only_its_key_its_window_and_deadlines_up_to_its_own() -> None:
    b = book(window=30)
    granted(b)
    assert b.draw(OTHER, W, T0 + 60, T0) is None
    assert b.draw(KEY, W, T0 + 91, T0) is None  # a request deadline past the lease's (T0 + 90)
    assert b.draw(KEY, W, T0 + 90, T0 + 29.9) is not None
    assert b.draw(KEY, W, T0 + 60, T0 + 30) is None  # out of its draw window


def test_a_lease_used_up_inside_its_window_doubles_and_the_replaced_one_is_retired() -> None:
    b = book(initial_draws=4)
    granted(b)
    for _ in range(4):
        assert b.draw(KEY, W, T0 + 60, T0 + 1) is not None
    ask = b.ask(KEY, W, T0 + 60, T0 + 2)
    assert ask is not None and ask.amount == 8 * W and ask.request_id.endswith("-2")
    old = b.granted(KEY, ask, ask.amount, None, T0 + 2)
    assert old is not None and old.left == 0
    assert [x.id for x in b.leases()] == [ask.request_id]


def test_lease_size_stays_within_floor_cap_and_a_fraction_of_what_is_left() -> None:
    """The floor lifts a tiny first lease, the cap bounds a large one, and what the guard said is
    left under the tightest hard cap bounds both; a lease for fewer than two attempts is not asked."""
    small = book(min_usd=0.10)
    ask = small.ask(KEY, W, T0 + 60, T0)
    assert ask is not None and ask.amount == to_nanos(0.10)
    capped = book(max_usd=0.01)
    ask = capped.ask(KEY, W, T0 + 60, T0)
    assert ask is not None and ask.amount == to_nanos(0.01)
    b = book(fraction=0.1)
    ask = b.ask(KEY, W, T0 + 60, T0)
    assert ask is not None
    b.granted(KEY, ask, ask.amount, to_nanos(0.2), T0)  # $0.20 left after it
    b.retire()
    ask = b.ask(KEY, W, T0 + 60, T0 + 1)
    assert ask is not None and ask.amount == to_nanos(0.02)
    b.reported(KEY, to_nanos(0.015))  # a per-attempt reservation's reply: $0.015 left
    assert b.ask(KEY, W, T0 + 60, T0 + 1) is None  # 10% of it holds one attempt: reserve per attempt
    assert book(max_usd=0.001).ask(KEY, W, T0 + 60, T0) is None


def test_a_denied_lease_means_per_attempt_reservations_for_the_backoff_then_a_smaller_lease() -> None:
    b = book(backoff=5)
    ask = b.ask(KEY, W, T0 + 60, T0)
    assert ask is not None
    b.denied(KEY, ask, None, T0)
    assert b.draw(KEY, W, T0 + 60, T0 + 1) is None
    assert b.ask(KEY, W, T0 + 60, T0 + 4.9) is None
    again = b.ask(KEY, W, T0 + 60, T0 + 5)
    assert again is not None and again.amount == ask.amount // 2
    b.denied(KEY, again, to_nanos(0.05), T0 + 5)  # it said $0.05 is left
    third = b.ask(KEY, W, T0 + 60, T0 + 10)
    assert third is not None and third.amount == min(again.amount // 2, to_nanos(0.005))


def test_idle_and_expired_leases_are_due_for_retirement_and_mostly_undrawn_ones_shrink() -> None:
    b = book(window=30, idle=10, initial_draws=8)
    granted(b)
    granted(b, OTHER)
    for _ in range(7):
        b.draw(OTHER, W, T0 + 60, T0 + 5)
    assert b.due(T0 + 9) == []
    (idle,) = b.due(T0 + 10)  # KEY: nothing drawn for 10 s; OTHER drew at T0 + 5
    assert idle.key == KEY and idle.left == 8 * W
    assert [x.key for x in b.due(T0 + 30)] == [OTHER]  # its window is over
    ask = b.ask(KEY, W, T0 + 60, T0 + 31)
    assert ask is not None and ask.amount == 4 * W  # it was not drawn from: half as large
    ask = b.ask(OTHER, W, T0 + 60, T0 + 31)
    assert ask is not None and ask.amount == 8 * W


def test_retiring_by_scope_takes_only_the_leases_that_count_in_it() -> None:
    """A per-attempt denial by `key:ci:daily` gives back the leases of key ci only."""
    b = book()
    granted(b)
    granted(b, OTHER)
    assert [x.key for x in b.retire("key:ci")] == [OTHER]
    assert [x.key for x in b.retire("tier:premium")] == [KEY]
    assert b.leases() == []
    granted(b)
    assert [x.key for x in b.retire()] == [KEY]
