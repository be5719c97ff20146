"""Prompt normalisation (pure): what two prompts must share to be "the same prompt".

``normalize`` folds case, collapses whitespace, unifies quotes and dashes and drops trailing
punctuation, so "What is the capital of France?" and "what is the capital of  france" are one exact key
(and embed identically: raw, MiniLM scores that pair only 0.91). Code is case- and space-sensitive, so
fenced blocks and `inline code` are kept verbatim.

``clean`` does the same but keeps case: the meaning guard reads capitals as a sign of names.

All of it is linear in the text (it runs on every client prompt): code spans are found with ``str.find``
instead of a lazy ``.*?`` that a prompt full of backticks turns quadratic, and trailing punctuation is
stripped with ``rstrip`` instead of ``[...]+$``, which rescans a run of dots from each of its characters.
"""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_TRAILING = ".?!;:,…"
_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-"})


def code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each fenced block (```...```) and `inline code` span, left to right: what the
    regex `````.*?```|`[^`\\n]+``` finds, in one pass."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    fences = True  # False once no closing fence is left: none can follow either
    while True:
        j = text.find("`", i)
        if j < 0:
            return spans
        if fences and text.startswith("```", j):
            k = text.find("```", j + 3)
            if k >= 0:
                spans.append((j, k + 3))
                i = k + 3
                continue
            fences = False
        end = text.find("`", j + 1)
        if end < 0:
            return spans  # no backtick left: no inline span either
        if end > j + 1 and text.find("\n", j + 1, end) < 0:
            spans.append((j, end + 1))
            i = end + 1
        else:
            i = j + 1
        if i >= n:
            return spans


def _split(text: str) -> list[tuple[bool, str]]:
    """(is_code, piece) in order."""
    out: list[tuple[bool, str]] = []
    at = 0
    for start, end in code_spans(text):
        if start > at:
            out.append((False, text[at:start]))
        out.append((True, text[start:end]))
        at = end
    if at < len(text):
        out.append((False, text[at:]))
    return out


def strip_trailing(text: str) -> str:
    """``text`` without trailing whitespace and sentence punctuation."""
    while True:
        stripped = text.rstrip().rstrip(_TRAILING)
        if stripped == text:
            return text
        text = stripped


def _prose(piece: str, fold: bool) -> str:
    piece = unicodedata.normalize("NFKC", piece).translate(_QUOTES)
    piece = _SPACE.sub(" ", piece)
    return piece.casefold() if fold else piece


def _join(text: str, fold: bool) -> str:
    out = "".join(piece if code else _prose(piece, fold) for code, piece in _split(text))
    out = out.strip()
    if not out.endswith("`"):
        out = strip_trailing(out)
    return out


def normalize(text: str) -> str:
    """Case-folded, whitespace-collapsed, trailing punctuation dropped; code kept verbatim."""
    return _join(text, fold=True)


def clean(text: str) -> str:
    """Like :func:`normalize` but keeps case (for the meaning guard)."""
    return _join(text, fold=False)
