"""policy/classify.py's code-generation rule tests its shared word boundary once, before the alternatives:
the same matches as the rule written with a boundary per alternative (the form it had), on any text."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from policy.classify import _RULES

UNFACTORED = re.compile(
    r"(```|\bdef |\bclass \w+|\bfunction\b|\bimplement\b|\bwrite (a|an|the)? ?(python|rust|go|java|c\+\+|"
    r"javascript|typescript|sql|bash|shell)?\s*(function|program|script|class|method|code)|\brefactor\b|"
    r"\bcompile\b|\bregex\b|\balgorithm\b|\bcode\b)",
    re.I,
)
FACTORED = dict(_RULES)["code-generation"]
WORDS = ["def ", "class x", "function", "implement", "write a python script", "write the code", "refactor",
         "compile", "regex", "algorithm", "code", "```", "Code", "CLASS  y", "\u017f", "\u212a", "7", "_", " ",
         "é", "-"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=4)), max_size=12))
def test_the_factored_code_rule_matches_where_and_what_the_unfactored_one_did(parts: list[str]) -> None:
    """Same span and groups on text built from the rule's own words, their case and near misses."""
    text = "".join(parts)
    old, new = UNFACTORED.search(text), FACTORED.search(text)
    assert (old is None) == (new is None)
    if old is not None and new is not None:
        assert old.span() == new.span() and old.groups() == new.groups()
