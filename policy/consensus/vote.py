"""Judge every pair of answers, cluster those that agree, vote with the confidences (pure).

    cand = candidate(text, vector=..., behaviour=...)          one answer, prepared
    judge(a, b, examples, thresholds) -> Verdict               agree?, score, method, reason
    consensus(cands, weights, threshold, examples, thresholds) -> (winner index, Consensus)

Order of the evidence, strongest first: for two code answers, behaviour on the request's examples,
then equal normalised ASTs, then embedding similarity of the code; for prose, an explainable
contradiction (negation, numbers, yes/no, a different short answer), then a plain agreement (same
number, same yes/no, a short answer contained in the other), then embedding similarity (MiniLM cosine),
or word overlap when no embedding was available. Thresholds are tuned by bench/consensus_eval.py on
the dev half of bench/data/consensus_pairs.jsonl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policy.consensus import code as codecheck
from policy.consensus import prose
from schemas.result import Agreement, Consensus


@dataclass(frozen=True)
class Thresholds:
    # tuned on the dev split of bench/data/consensus_pairs.jsonl (docs/benchmarks.md, "Ensemble consensus")
    prose: float = 0.46  # MiniLM cosine at or above which two prose answers agree (when no check decided)
    lexical: float = 0.5  # word overlap, when no embedding is at hand (the router's former rule)
    # two code answers with different ASTs and no examples to run: MiniLM cannot tell a `<` from a `>`
    # (cosine 0.99 for a max and a min), so dev chose "only if identical" — they count as not shown to agree
    code: float = 1.0


@dataclass(frozen=True)
class Candidate:
    text: str
    code: str | None = None
    shape: str | None = None  # normalised AST
    vector: tuple[float, ...] | None = None  # unit MiniLM embedding
    behaviour: tuple[str, ...] | None = None  # results on the request's examples (sandbox)


@dataclass(frozen=True)
class Verdict:
    agree: bool
    score: float
    method: str
    reason: str = ""


def candidate(text: str, *, vector: Sequence[float] | None = None, behaviour: Sequence[str] | None = None) -> Candidate:
    code = codecheck.code_of(text)
    return Candidate(
        text=text,
        code=code,
        shape=codecheck.normalised(code) if code else None,
        vector=tuple(vector) if vector is not None else None,
        behaviour=tuple(behaviour) if behaviour is not None else None,
    )


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


def _judge_code(a: Candidate, b: Candidate, examples: list[str], th: Thresholds) -> Verdict:
    if a.behaviour is not None and b.behaviour is not None:
        compared = codecheck.compare_behaviour(list(a.behaviour), list(b.behaviour), examples)
        if compared is not None:
            agree, reason = compared
            return Verdict(agree, 1.0 if agree else 0.0, "behaviour", reason)
    if a.shape is not None and a.shape == b.shape:
        return Verdict(True, 1.0, "ast", "same normalised AST")
    if a.vector is not None and b.vector is not None:
        score = cosine(a.vector, b.vector)
        return Verdict(score >= th.code, score, "code-embedding", f"different ASTs, cosine {score:.2f}")
    score = prose.lexical_similarity(a.code or a.text, b.code or b.text)
    return Verdict(score >= th.code, score, "code-lexical", f"different ASTs, word overlap {score:.2f}")


def judge(a: Candidate, b: Candidate, examples: list[str], th: Thresholds) -> Verdict:
    if a.code is not None and b.code is not None:
        return _judge_code(a, b, examples, th)
    reason = prose.contradiction(a.text, b.text)
    if reason is not None:
        return Verdict(False, 0.0, "contradiction", reason)
    reason = prose.settled(a.text, b.text)
    if reason is not None:
        return Verdict(True, 1.0, "check", reason)
    if a.vector is not None and b.vector is not None:
        score = cosine(a.vector, b.vector)
        return Verdict(score >= th.prose, score, "embedding", f"cosine {score:.2f}")
    score = prose.lexical_similarity(a.text, b.text)
    return Verdict(score >= th.lexical, score, "lexical", f"word overlap {score:.2f} (no embedding)")


def consensus(
    cands: Sequence[Candidate],
    weights: Sequence[float],
    threshold: float,
    examples: list[str] | None = None,
    th: Thresholds = Thresholds(),
    prompt: str = "",
) -> tuple[int, Consensus]:
    """Answers join a cluster only if they agree with every member of it; consistency is the winning
    cluster's share of the total weight. Below ``threshold`` the result is escalated for human review.
    An answer that only repeats the prompt gets no vote (a model is often surest when it copies) but stays
    in the total: it is never the winner, and it lowers the consistency like any dissent."""
    n = len(cands)
    total = sum(weights) or 1.0  # an echo still counts in the total: it is a member that did not answer
    weights = [0.0 if prompt and prose.echoes(c.text, prompt) else w for c, w in zip(cands, weights, strict=True)]
    verdicts = {(i, j): judge(cands[i], cands[j], examples or [], th) for i in range(n) for j in range(i + 1, n)}
    clusters: list[list[int]] = []
    for i in range(n):
        for members in clusters:
            if all(verdicts[(m, i)].agree for m in members):
                members.append(i)
                break
        else:
            clusters.append([i])
    votes = {f"answer-{c[0]}": round(sum(weights[i] for i in c), 4) for c in clusters}
    best = max(clusters, key=lambda c: (sum(weights[i] for i in c), -c[0]))
    winner = max(best, key=lambda i: (weights[i], -i))
    share = sum(weights[i] for i in best) / total
    pairs = [
        Agreement(a=i, b=j, agree=v.agree, score=round(v.score, 4), method=v.method, reason=v.reason)
        for (i, j), v in verdicts.items()
    ]
    return winner, Consensus(
        consistency=round(share, 4), threshold=threshold, escalated=share < threshold, votes=votes, pairs=pairs
    )


MAX_EMBED_CHARS = 600  # MiniLM reads 255 tokens: a longer text is cut at a word boundary before embedding


def embed_text(text: str) -> str:
    """What is embedded for an answer: its first MAX_EMBED_CHARS characters, cut at a space."""
    text = " ".join(text.split())
    if len(text) <= MAX_EMBED_CHARS:
        return text
    cut = text[:MAX_EMBED_CHARS]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut
