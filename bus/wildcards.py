"""NATS subject wildcards (``*`` one token, ``>`` the rest): does a filter match a subject, do two overlap."""

from __future__ import annotations


def _tokens_overlap(a: list[str], b: list[str]) -> bool:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x == ">" or y == ">":
            return True
        if x != "*" and y != "*" and x != y:
            return False
        if i == min(len(a), len(b)) - 1 and len(a) != len(b):
            rest = a[i + 1 :] or b[i + 1 :]
            return rest == [">"]
    return len(a) == len(b)


def subjects_overlap(a: str, b: str) -> bool:
    """True when some subject matches both filters (NATS wildcards ``*`` and ``>``)."""
    return _tokens_overlap(a.split("."), b.split("."))


def subject_matches(subject: str, pattern: str) -> bool:
    """Whether a concrete subject matches a filter."""
    s, p = subject.split("."), pattern.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(s) == len(p)
