"""Do two answers to the same request agree? Pure; the one comparator premium validation uses.

    agreement(local, premium) -> float   0..1

A lexical judge, kept behind this one function so a better one (the ensemble's consensus: embeddings,
normalised ASTs, executed tests) can replace it without touching its callers. What it does:

- the final numbers of both answers, when both have one, must be equal ("4" and "The answer is 4."
  agree, "4" and "5" do not, whatever the words around them);
- a short answer (at most ``SHORT`` content words) agrees with a longer one that contains all of it;
- otherwise the F1 overlap of the content words (stop words dropped);
- negation flips the meaning: answers whose negations differ in parity lose most of their score
  ("Paris" and "not Paris" do not agree).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
SHORT = 3
NEGATION_PENALTY = 0.2
STOP_WORDS = frozenset(
    "a an the is are was were be been being of to in on and or for with that this these those it its as at by "
    "from so than then there here answer answers result i we you he she they my our your me us do does did "
    "can could would should will just also which what who whom whose".split()
)
NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "cannot", "false", "t"})


def _content(text: str) -> list[str]:
    words = _WORD.findall(text.lower().replace("n't", " not"))
    return [w for w in words if w not in STOP_WORDS]


def _final_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", ".").lstrip("+") if found else None


def _negated(words: list[str]) -> bool:
    return sum(w in NEGATIONS for w in words) % 2 == 1


def agreement(local: str, premium: str) -> float:
    """0..1: how far the two answers say the same thing."""
    a, b = _content(local), _content(premium)
    if not a and not b:
        return 1.0 if local.strip() == premium.strip() else 0.0
    if not a or not b:
        return 0.0
    na, nb = _final_number(local), _final_number(premium)
    if na is not None and nb is not None and float(na) != float(nb):
        return 0.0
    sa, sb = set(a) - NEGATIONS, set(b) - NEGATIONS
    shared = len(sa & sb)
    f1 = 2 * shared / (len(sa) + len(sb)) if sa or sb else 1.0
    shorter = sa if len(sa) <= len(sb) else sb
    if shorter and len(shorter) <= SHORT and shared == len(shorter):
        f1 = 1.0
    if na is not None and na == nb and len(shorter) <= SHORT:
        f1 = 1.0  # the same short numeric answer, in more or fewer words
    if _negated(a) != _negated(b):
        f1 *= NEGATION_PENALTY
    return round(f1, 4)
