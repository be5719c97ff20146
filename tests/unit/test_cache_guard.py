"""The meaning guard with plain data: paraphrases pass, near-duplicates that ask something else do not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.cache.guard import check, stem
from actors.cache.normalize import clean, normalize


def verdict(a: str, b: str) -> tuple[bool, str]:
    v = check(clean(a), clean(b))
    return v.ok, v.reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reverse a list in Python?", "How can I reverse a list in Python"),
        ("How do I reverse a list in Python?", "What's the best way to reverse a Python list?"),
        ("how do I reverse a list in python", "How do I reverse a list in Python?"),
        ("Convert five miles to kilometers", "Convert 5 miles to kilometers"),
        ("I'm trying to install numpy", "I am trying to install numpy"),
        ("Explain the difference between TCP and UDP", "What is the difference between TCP and UDP?"),
        ("Summarize the plot of Hamlet", "Give me a summary of the plot of Hamlet"),
        ("How do I fix a leaking faucet?", "How do I repair a leaking faucet?"),
        ("What is 1,000 times 3?", "What is 1000 times 3?"),
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    """Rewordings, filler words, number words and listed synonyms keep the meaning."""
    assert verdict(a, b) == (True, "")


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("how do I enable X", "how do I disable X", "opposite"),
        ("How do I install Docker?", "How do I uninstall Docker?", "opposite"),
        ("Sort the list in ascending order", "Sort the list in descending order", "opposite"),
        ("Is the file valid?", "Is the file invalid?", "opposite"),
        ("how to log in to github", "how to log out of github", "opposite"),
        ("How do I grant a user access to the bucket?", "How can I revoke access for a user to a bucket?", "opposite"),
        ("Why does my build succeed locally?", "Why did my build fail locally?", "opposite"),
        ("How do I attach a volume to the container?", "How can I detach the volume from a container?", "opposite"),
        ("Why is my code working?", "Why is my code not working?", "negation"),
        ("Which foods contain gluten?", "Which foods don't contain gluten?", "negation"),
        ("Reverse a string using slicing", "Reverse a string without using slicing", "negation"),
        ("Convert 5 miles to kilometers", "Convert 6 miles to kilometers", "numbers"),
        ("List three painters", "List four painters", "numbers"),
        ("Divide 10 by 2", "Divide 2 by 10", "numbers"),
        ("Explain the first law of thermodynamics", "Explain the second law of thermodynamics", "numbers"),
        ("Convert 5 miles to kilometers", "Convert 5 kilometers to miles", "names"),
        ("Is Python faster than Java?", "Is Java faster than Python?", "names"),
        ("What is the capital of Austria?", "What is the capital of Australia?", "names"),
        ("write it in python", "write it in rust", "names"),
        ("Port this code from Python 2 to Python 3", "Port this code from Python 3 to Python 2", "numbers"),
        ("Copy files from the server to my laptop", "Copy files from my laptop to the server", "direction"),
        ("does alice love bob", "does bob love alice", "another order"),
        ("How many calories are in an apple", "How many calories are in a banana", "one word"),
        ("Sort a list in Python", "Sort a list in Python in descending order", "constraint"),
        ("Write a poem about the sea", "Write a sad poem about the sea", "constraint"),
        ("Fix `getUser`", "Fix `getUsers`", "code"),
        ("Translate 'good morning' to French", "Translate 'good night' to French", "quoted"),
    ],
)
def test_near_duplicates_with_another_meaning_are_refused(a: str, b: str, reason: str) -> None:
    """Negation, opposites, numbers, names, direction, order, one swapped word, added constraints, code, quotes."""
    ok, why = verdict(a, b)
    assert not ok and reason in why
    assert not verdict(b, a)[0]  # symmetric


def test_stem_is_light() -> None:
    """Inflections meet; different words stay apart."""
    assert stem("sorting") == stem("sort") and stem("lists") == stem("list") and stem("summary") == stem("summarize")
    assert stem("libraries") == stem("library")
    assert stem("apple") != stem("banana") and stem("class") == "class"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_a_prompt_always_passes_against_itself(text: str) -> None:
    """The guard never refuses a prompt compared with itself, whatever its characters."""
    assert check(clean(text), clean(text)).ok


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_normalisation_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing (keys are stable)."""
    assert normalize(normalize(text)) == normalize(text)
    assert clean(clean(text)) == clean(text)
