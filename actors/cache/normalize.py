"""Prompt normalisation (pure): what two prompts must share to be "the same prompt".

``normalize`` folds case, collapses whitespace, unifies quotes and dashes and drops trailing
punctuation, so "What is the capital of France?" and "what is the capital of  france" are one exact key
(and embed identically: raw, MiniLM scores that pair only 0.91). Code is case- and space-sensitive, so
fenced blocks and `inline code` are kept verbatim.

``clean`` does the same but keeps case: the meaning guard reads capitals as a sign of names.
"""

from __future__ import annotations

import re
import unicodedata

_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.DOTALL)
_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s.?!;:,…]+$")
_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-"})


def _split(text: str) -> list[tuple[bool, str]]:
    """(is_code, piece) in order."""
    return [(i % 2 == 1, piece) for i, piece in enumerate(_CODE.split(text)) if piece]


def _prose(piece: str, fold: bool) -> str:
    piece = unicodedata.normalize("NFKC", piece).translate(_QUOTES)
    piece = _SPACE.sub(" ", piece)
    return piece.casefold() if fold else piece


def _join(text: str, fold: bool) -> str:
    out = "".join(piece if code else _prose(piece, fold) for code, piece in _split(text))
    out = out.strip()
    if not out.endswith("`"):
        out = _TRAILING.sub("", out)
    return out


def normalize(text: str) -> str:
    """Case-folded, whitespace-collapsed, trailing punctuation dropped; code kept verbatim."""
    return _join(text, fold=True)


def clean(text: str) -> str:
    """Like :func:`normalize` but keeps case (for the meaning guard)."""
    return _join(text, fold=False)
