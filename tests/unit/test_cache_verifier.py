"""The verifier with plain data and the real WordNet lexicon: what it accepts, what it refuses and why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.cache.diff import strip_social
from actors.cache.lexicon import Lexicon
from actors.cache.normalize import clean
from actors.cache.verifier import STEPS, Verifier


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load()


def verdict(v: Verifier, a: str, b: str, cosine: float) -> tuple[bool, str]:
    found = v.check(clean(a), clean(b), cosine)
    return found.ok, found.reason


@pytest.mark.parametrize(
    ("a", "b", "cosine"),
    [
        ("a trie that supports insert and search", "a trie that supports search and insert", 0.97),
        ("How do I read a CSV file in Python?", "In Python, how do I read a CSV file?", 0.95),
        ("Should I buy a Kindle or a paper book?", "Should I buy a paper book or a Kindle?", 0.97),
        ("What is the biggest ocean?", "What is the largest ocean?", 0.96),  # WordNet synonyms
        ("How do I fix a leaking faucet?", "How do I repair a leaking faucet?", 0.93),
        ("Give me a haiku about autumn.", "Hi! Could you give me a haiku about autumn? Thanks a lot.", 0.91),
        ("How do I remove a pod with kubectl?", "How do I delete a pod with kubectl?", 0.97),  # broader verb asked
        ("What's the temperature on Mars?", "What's the temp on Mars?", 0.93),  # abbreviation
    ],
)
def test_rewordings_are_accepted(verifier: Verifier, a: str, b: str, cosine: float) -> None:
    """Reorderings, moved phrases, synonyms, politeness, a broader verb and abbreviations are the same question."""
    assert verdict(verifier, b, a, cosine) == (True, "")


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("Can a cat eat dog food?", "Can a dog eat cat food?", "swapped"),
        ("Does Alice owe Bob money?", "Does Bob owe Alice money?", "swapped"),
        ("How do I increase the font size in VS Code?", "How do I decrease the font size in VS Code?", "opposites"),
        ("How do I turn on dark mode?", "How do I turn off dark mode?", "opposites"),
        (
            "What is the best case running time of quicksort?",
            "What is the worst case running time of quicksort?",
            "opposites",
        ),  # fmt: skip
        ("Why did the Apollo 11 landing happen?", "When did the Apollo 11 landing happen?", "asks"),
        ("Run a script every hour with cron", "Run a script every day with cron", "another of its kind"),
        ("How many litres is 42 gallons?", "What is 42 litres in gallons?", "42"),
        ("Should I buy a gas stove?", "Should I buy a gas stove second hand?", "added at the end"),
        ("List prime numbers below 50", "List odd prime numbers below 50", "added modifier"),
        ("Write a Dockerfile that runs as root.", "Write a Dockerfile that runs as a non-root user.", "prefix"),
        ("Convert 5 miles to km", "Convert 6 miles to km", "numbers"),
    ],
)
def test_other_questions_are_refused_with_a_reason(verifier: Verifier, a: str, b: str, reason: str) -> None:
    """Swapped roles, opposites, another question word or kind, a moved number, an added clause or modifier,
    and the hard refusals: refused at a cosine of 0.96."""
    ok, why = verdict(verifier, b, a, 0.96)
    assert not ok and reason in why


def test_each_unmatched_word_raises_the_cosine_needed(verifier: Verifier) -> None:
    """No unmatched word: the floor; one (a word on one side only, or a weak pair): the second step; two:
    the third."""
    same, one = "How do I back up my iPhone?", "What's the way to back up my iPhone?"
    assert verdict(verifier, same, "How do I back up my iPhone", STEPS[0])[0]
    assert not verdict(verifier, one, same, STEPS[1] - 0.01)[0] and verdict(verifier, one, same, STEPS[1])[0]
    two = ("How do I migrate a project from Vue to React?", "How do I port a codebase from Vue to React?")
    assert not verdict(verifier, *two, STEPS[2] - 0.01)[0] and verdict(verifier, *two, STEPS[2])[0]
    assert not verdict(verifier, same, same, STEPS[0] - 0.01)[0]  # below the floor, whatever the words
    weak = ("How do you pronounce hello in Korean?", "How do you say hello in Korean?")  # a rare sense alike
    ok, why = verdict(verifier, *weak, STEPS[1] - 0.01)
    assert not ok and "pronounce~say" in why and verdict(verifier, *weak, STEPS[1])[0]


def test_lexicon_relations_use_the_usual_senses(verifier: Verifier) -> None:
    """Synonyms in their usual senses, antonyms, sister terms, broader verbs; a rare shared sense is weak."""
    lex = verifier.lexicon
    assert isinstance(lex, Lexicon)
    assert lex.relation("biggest", "largest") == "synonym" and lex.relation("quick", "fast") == "synonym"
    assert lex.relation("encode", "decode") == "antonym" and lex.relation("hour", "day") == "sister"
    assert lex.relation("remove", "delete") == "broader" and lex.relation("delete", "remove") == "narrower verb"
    assert lex.relation("pronounce", "say") == "rare synonym" and lex.relation("banana", "kubernetes") is None


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("hello! what is the capital of australia? thank you so much.", "what is the capital of australia"),
        ("could you tell me: what causes thunder", "what causes thunder"),
        ("hey quick question - how do i exit vim?", "how do i exit vim"),
        ("x happened. why?", "x happened. why?"),  # a question word is never a filler
        ("thanks", "thanks"),  # nothing else left: unchanged
        ("sorry if this is basic, but how do i merge dicts?", "sorry if this is basic, but how do i merge dicts?"),
    ],
)
def test_strip_social_removes_only_greetings_and_thanks(text: str, stripped: str) -> None:
    """Segments made only of social and function words go, at the start and the end; nothing else."""
    assert strip_social(text) == stripped


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=160))
def test_a_prompt_is_always_accepted_against_itself(text: str) -> None:
    """Whatever the text, it answers itself (no rule refuses identical prompts), and stripping is stable."""
    v = _shared()
    assert v.check(clean(text), clean(text), 1.0).ok
    assert strip_social(strip_social(text)) == strip_social(text)


@pytest.mark.parametrize(
    "text",
    ["a`" * 100_000, "write " * 33_000, " ".join(f"w{i}" for i in range(30_000)), "a." * 100_000],
)
def test_hostile_text_is_refused_or_compared_in_linear_time(verifier: Verifier, text: str) -> None:
    """Long prompts never reach the word-by-word comparison; the hard refusals and the stripping of
    greetings stay linear on 200 KB (their quadratic versions took minutes)."""
    assert not verifier.check(text, text[:-1], 0.99).ok
    assert verifier.check(text[:3000], text[:3000], 0.99).ok
    assert strip_social(text) is not None


_VERIFIER: list[Verifier] = []


def _shared() -> Verifier:
    if not _VERIFIER:
        _VERIFIER.append(Verifier.load())
    return _VERIFIER[0]
