"""A lease's settled draws (policy/draws.py): first charge of a draw owns it, unclaim reopens it."""

from __future__ import annotations

from policy.chargebook import key_hash
from policy.draws import FAILED, RESULT, Draws, claim, draw_id, owner_of, unclaim


def test_the_first_charge_of_a_draw_owns_it_and_a_second_outcome_does_not() -> None:
    draws: Draws = {}
    assert claim(draws, "L1", "r1", 0, "r1:0:failed")  # the attempt failed first
    assert claim(draws, "L1", "r1", 0, "r1:0:failed")  # the same charge again (a redelivery): still its owner
    assert not claim(draws, "L1", "r1", 0, "r1")  # the attempt's late result: not this draw's settlement
    assert claim(draws, "L1", "r1", 1, "r1")  # another attempt is another draw
    assert claim(draws, "L2", "r1", 0, "r1")  # and another lease is another book
    assert draws["L1"] == {draw_id("r1", 0): FAILED, draw_id("r1", 1): RESULT}


def test_unclaim_reopens_the_draw_only_for_its_owner() -> None:
    draws: Draws = {}
    assert claim(draws, "L1", "r2", 3, "r2")
    unclaim(draws, "L1", "r2", 3, "r2:3:failed")  # not the owner: nothing changes
    assert not claim(draws, "L1", "r2", 3, "r2:3:failed")
    unclaim(draws, "L1", "r2", 3, "r2")  # its entry was not stored: the draw is open again
    assert claim(draws, "L1", "r2", 3, "r2:3:failed")
    unclaim(draws, "missing", "r2", 3, "r2")  # an unknown lease: nothing to do


def test_the_usual_owners_are_small_ints_and_any_other_key_its_hash() -> None:
    assert owner_of("r3", 2, "r3") == RESULT and owner_of("r3", 2, "r3:2:failed") == FAILED
    assert owner_of("r3", 2, "r3:1:failed") == key_hash("r3:1:failed")  # another attempt's failure key
    assert owner_of("r3", 2, "something-else") == key_hash("something-else")
