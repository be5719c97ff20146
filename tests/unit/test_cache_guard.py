"""The hard refusals with plain data: exact differences refuse, rewordings pass on to the word-by-word check."""

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
        ("Convert five miles to kilometers", "Convert 5 miles to kilometers"),
        ("What is 1,000 times 3?", "What is 1000 times 3?"),
        ("Give me one example of recursion", "Give me an example of recursion"),  # a lone "one" is no number
        ("Quick one - how do I exit vim?", "How do I exit vim?"),
        ("a trie that supports insert and search", "a trie that supports search and insert"),  # reordering
        ("What is the biggest ocean?", "What is the largest ocean?"),  # synonyms: the verifier's call
        ("Migrating from Python 2 to Python 3 - how?", "How do I migrate from Python 2 to Python 3?"),
        ("Convert 5 miles to km", "How many km is 5 miles?"),
    ],
)
def test_rewordings_pass_the_hard_refusals(a: str, b: str) -> None:
    """Rewordings, number words, a lone "one", reorderings and synonyms are not hard differences."""
    assert verdict(a, b) == (True, "")


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("Why is my code working?", "Why is my code not working?", "negation"),
        ("Which foods contain gluten?", "Which foods don't contain gluten?", "negation"),
        ("Write a regex for IPv4 addresses", "Write a regex for anything except IPv4 addresses", "negation"),
        ("Reverse a string using slicing", "Reverse a string without using slicing", "negation"),
        (
            "Write a Dockerfile for a Flask app that runs as root.",
            "Write a Dockerfile for a Flask app that runs as a non-root user.",
            "prefix",
        ),  # fmt: skip
        ("Which animals are venomous?", "Which animals are non-venomous?", "prefix"),
        ("How do I install Docker?", "How do I uninstall Docker?", "prefix"),
        ("Is the file valid?", "Is the file invalid?", "prefix"),
        ("Is this function thread-safe?", "Is this function thread-unsafe?", "prefix"),
        ("Convert 5 miles to kilometers", "Convert 6 miles to kilometers", "numbers"),
        ("List three painters", "List four painters", "numbers"),
        ("Divide 10 by 2", "Divide 2 by 10", "numbers"),
        ("Solve 2x + 11 = 31 for x", "Solve 2x - 11 = 31 for x", "arithmetic"),
        ("Convert 5 miles to kilometers", "Convert 5 kilometers to miles", "direction"),
        ("Is Python faster than Java?", "Is Java faster than Python?", "direction"),
        ("Copy files from the server to my laptop", "Copy files from my laptop to the server", "direction"),
        ("Fix `getUser`", "Fix `getUsers`", "code"),
        ("Translate 'good morning' to French", "Translate 'good night' to French", "quoted"),
    ],
)
def test_exact_differences_are_refused(a: str, b: str, reason: str) -> None:
    """Negation, negating prefixes, numbers, arithmetic, direction, code and quotes refuse, both ways."""
    ok, why = verdict(a, b)
    assert not ok and reason in why
    assert not verdict(b, a)[0]


def test_stem_is_light() -> None:
    """Inflections meet; different words stay apart."""
    assert stem("sorting") == stem("sort") and stem("lists") == stem("list") and stem("summary") == stem("summarize")
    assert stem("libraries") == stem("library")
    assert stem("apple") != stem("banana") and stem("class") == "class"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_a_prompt_always_passes_against_itself(text: str) -> None:
    """The hard refusals never refuse a prompt compared with itself, whatever its characters."""
    assert check(clean(text), clean(text)).ok


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_normalisation_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing (keys are stable)."""
    assert normalize(normalize(text)) == normalize(text)
    assert clean(clean(text)) == clean(text)
