"""Diversity of answers, pure (the paper's §9.1 and §9.2.4): no I/O, no clock, no logging.

    answer = Answer(..., text=..., shape=structure(code_of(text)), vector=<unit embedding or None>)
    metrics(answers) -> Metrics        one group of answers to the same task (or one fan-out)
    summarise(answers) -> Summary      a window: overall figures plus one Metrics per task

Unique solution approaches: answers that are Python code are parsed with ``ast`` and reduced to their
structure (identifiers, literals and docstrings abstracted away: renaming variables is not a new
approach); two code answers are one approach when their structures are near-identical. Prose answers
are one approach when their sentence embeddings are close (cosine), or, without an embedder, when
their word sets overlap strongly. Further figures: AST diversity (mean pairwise structural distance),
embedding diversity (mean pairwise cosine distance), model-family coverage and evenness, the share of
the most used model, the variance of the temperatures used, and a 0..1 ``diversity_score``.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CODE_SAME_APPROACH = 0.85  # structural similarity at or above which two code answers are one approach
PROSE_SAME_APPROACH = 0.80  # embedding cosine similarity at or above which two prose answers are one
LEXICAL_SAME_APPROACH = 0.5  # word-set Jaccard, when there is no embedder
MAX_GROUP = 200  # pairwise figures use at most this many answers of a group (the most recent)
MAX_TEXT = 4000  # characters of an answer kept for analysis

_WORD = re.compile(r"[a-z0-9]+")


# --- one answer ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One answer, with what the metrics need; ``group`` is its task, else its fan-out parent."""

    at: float
    request_id: str
    model: str
    family: str
    tier: str = "local"
    group: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    prompt_variant: str | None = None
    text: str = ""
    shape: Counter[str] | None = None  # the code's structure; None for prose
    vector: Any = None  # unit embedding (numpy array) or None


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]


def _label(node: ast.AST) -> str:
    """A node's kind with identifiers and literal values abstracted (``Name``, ``Constant``)."""
    return type(node).__name__


def structure(code: str | None) -> Counter[str] | None:
    """The normalised structure of Python code: a bag of node kinds and (parent, child) kind pairs.
    Identifiers, literal values, docstrings and formatting do not count."""
    if code is None:
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    _strip_docstrings(tree)
    bag: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.expr_context):
            continue
        parent = _label(node)
        bag[parent] += 1
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.expr_context):
                bag[f"{parent}>{_label(child)}"] += 1
    return bag


def structural_similarity(a: Counter[str], b: Counter[str]) -> float:
    """Weighted Jaccard of two structure bags: 1.0 for the same structure."""
    keys = a.keys() | b.keys()
    high = sum(max(a[k], b[k]) for k in keys)
    return sum(min(a[k], b[k]) for k in keys) / high if high else 1.0


def lexical_similarity(a: str, b: str) -> float:
    ta, tb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def cluster(n: int, similar: Callable[[int, int], float], threshold: float) -> list[list[int]]:
    """Leader clustering: each item joins the first cluster whose leader it resembles enough."""
    clusters: list[list[int]] = []
    for i in range(n):
        for members in clusters:
            if similar(members[0], i) >= threshold:
                members.append(i)
                break
        else:
            clusters.append([i])
    return clusters


def _mean_pairwise_distance(n: int, similar: Callable[[int, int], float]) -> float:
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return sum(1.0 - similar(i, j) for i, j in pairs) / len(pairs)


def embedding_diversity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cos) of unit vectors, rows of ``vectors``."""
    n = int(vectors.shape[0])
    if n < 2:
        return 0.0
    sims = vectors @ vectors.T
    upper = sims[np.triu_indices(n, k=1)]
    return float(np.clip(1.0 - upper, 0.0, 2.0).mean())


# --- one group -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metrics:
    answers: int
    unique_approaches: int
    approach_ratio: float
    model_families: int
    models: int
    top_model_share: float
    family_evenness: float
    prompt_variants: int
    ast_diversity: float | None = None
    embedding_diversity: float | None = None
    temperature_variance: float | None = None
    code_answers: int = 0
    diversity_score: float = 0.0
    families: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """The numeric figures (for events and Prometheus); absent figures are left out."""
        out: dict[str, float] = {}
        for name in (
            "answers",
            "unique_approaches",
            "approach_ratio",
            "model_families",
            "models",
            "top_model_share",
            "family_evenness",
            "prompt_variants",
            "ast_diversity",
            "embedding_diversity",
            "temperature_variance",
            "code_answers",
            "diversity_score",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(float(value), 6)
        return out


def evenness(counts: Sequence[int]) -> float:
    """Shannon entropy of the counts over its maximum for that many answers (each from a different
    family): 0 for one family, 1 when every answer comes from a different family."""
    total = sum(counts)
    if total < 2:
        return 0.0
    h = -sum(c / total * math.log(c / total) for c in counts if c)
    return max(0.0, h / math.log(total))


def _prose_approaches(group: list[Answer], prose: list[Answer]) -> tuple[int, np.ndarray | None]:
    """Approaches among the prose answers: by embedding when every answer of the group has a vector (the
    group's matrix comes back too, for the embedding diversity), lexically otherwise."""
    vectors = [a.vector for a in group]
    if not group or any(v is None for v in vectors):
        texts = [a.text for a in prose]

        def text_sim(i: int, j: int) -> float:
            return lexical_similarity(texts[i], texts[j])

        return len(cluster(len(texts), text_sim, LEXICAL_SAME_APPROACH)), None
    matrix = np.asarray(np.vstack(vectors), dtype=np.float64)
    index = {id(a): k for k, a in enumerate(group)}
    prose_rows = matrix[[index[id(a)] for a in prose]] if prose else matrix[:0]

    def prose_sim(i: int, j: int) -> float:
        return float(prose_rows[i] @ prose_rows[j])

    return len(cluster(len(prose), prose_sim, PROSE_SAME_APPROACH)), matrix


def metrics(answers: Sequence[Answer]) -> Metrics:
    """Every figure for one group of answers (the most recent MAX_GROUP for pairwise figures)."""
    group = list(answers)[-MAX_GROUP:]
    n = len(group)
    families = Counter(a.family for a in answers)
    models = Counter(a.model for a in answers)
    temps = [a.temperature for a in answers if a.temperature is not None]
    variants = {a.prompt_variant for a in answers if a.prompt_variant}

    code = [a for a in group if a.shape is not None]
    prose = [a for a in group if a.shape is None]
    code_shapes = [a.shape for a in code if a.shape is not None]

    def code_sim(i: int, j: int) -> float:
        return structural_similarity(code_shapes[i], code_shapes[j])

    prose_approaches, matrix = _prose_approaches(group, prose)
    approaches = len(cluster(len(code_shapes), code_sim, CODE_SAME_APPROACH)) + prose_approaches

    ast_div = _mean_pairwise_distance(len(code_shapes), code_sim) if len(code_shapes) >= 2 else None
    emb_div = embedding_diversity(matrix) if matrix is not None and n >= 2 else None
    ratio = approaches / n if n else 0.0
    even = evenness(list(families.values()))
    parts = [ratio, even]
    if ast_div is not None:
        parts.append(ast_div)
    if emb_div is not None:
        parts.append(min(1.0, emb_div))
    return Metrics(
        answers=len(answers),
        unique_approaches=approaches,
        approach_ratio=ratio,
        model_families=len(families),
        models=len(models),
        top_model_share=max(models.values()) / len(answers) if answers else 0.0,
        family_evenness=even,
        prompt_variants=len(variants),
        ast_diversity=ast_div,
        embedding_diversity=emb_div,
        temperature_variance=float(np.var(temps)) if temps else None,
        code_answers=len(code),
        diversity_score=sum(parts) / len(parts) if n >= 2 else 0.0,
        families=dict(families),
    )


# --- a window ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """A window's figures: ``overall`` mixes every answer (families, top model, temperatures), and
    its approach figures are the answer-weighted means over the groups (tasks / fan-outs)."""

    overall: dict[str, float]
    tasks: dict[str, Metrics]
    groups: int  # groups with two answers or more (the ones approach figures come from)


def summarise(answers: Sequence[Answer], *, task: str | None = None, max_tasks: int = 1000) -> Summary:
    """Figures for a window of answers; with ``task``, only that task's answers."""
    if task is not None:
        answers = [a for a in answers if a.group == task]
    by_group: dict[str, list[Answer]] = {}
    for a in answers:
        if a.group is not None:
            by_group.setdefault(a.group, []).append(a)
    recent = sorted(by_group, key=lambda g: by_group[g][-1].at, reverse=True)[:max_tasks]
    tasks = {g: metrics(by_group[g]) for g in recent}
    overall = metrics(answers).as_dict() if answers else {"answers": 0.0}
    multi = [m for m in tasks.values() if m.answers >= 2]
    for name in ("approach_ratio", "ast_diversity", "embedding_diversity", "diversity_score"):
        overall.pop(name, None)
        weighted = [(getattr(m, name), m.answers) for m in multi if getattr(m, name) is not None]
        if weighted:
            overall[name] = round(sum(v * w for v, w in weighted) / sum(w for _, w in weighted), 6)
    overall["unique_approaches"] = float(sum(m.unique_approaches for m in multi))
    overall["tasks"] = float(len(by_group))
    return Summary(overall=overall, tasks=tasks, groups=len(multi))
