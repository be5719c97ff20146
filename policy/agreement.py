"""Do two answers to the same request agree? Pure; the one comparator premium validation uses.

    agreement(local, premium) -> float   0..1

The ensemble's own judge (actors/router/consensus), without embeddings (the shadow is compared off the
request path, from text alone): two code answers by normalised AST; prose first by the explainable
checks (a negated/asserted word, a different final number, a yes/no flip, a different short answer -> 0;
the same number, the same yes/no, a short answer contained in the other -> 1), otherwise the word
overlap of the content words. Tuned and measured on bench/data/consensus_pairs.jsonl (docs/benchmarks.md).
"""

from __future__ import annotations

from policy.consensus.vote import Thresholds, candidate, judge


def agreement(local: str, premium: str) -> float:
    """0..1: how far the two answers say the same thing."""
    if not local.strip() or not premium.strip():
        return 1.0 if local.strip() == premium.strip() else 0.0
    verdict = judge(candidate(local), candidate(premium), [], Thresholds())
    return round(max(0.0, min(1.0, verdict.score)), 4)
