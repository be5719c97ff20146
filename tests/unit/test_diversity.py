"""Diversity metrics as pure functions of real answers: code grouped by AST structure, prose grouped by
similarity, family coverage, top-model share, temperature variance and the diversity score."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from actors.diversity_monitor.diversity import (
    Answer,
    embedding_diversity,
    metrics,
    structural_similarity,
    structure,
    summarise,
)
from actors.diversity_monitor.window import answers_of
from policy.consensus.code import code_of
from schemas.result import GenerateResult, Provenance, Response
from tests.support.answers import FIB_DIVERSE, FIB_SAME, SKY_DIVERSE, SKY_SAME

TWO_FAMILIES = [("llama3.1-8b", "llama"), ("qwen2.5-coder-7b", "qwen")]
ONE_MODEL = [("llama3.1-8b", "llama")]
TEMPS = [0.7, 0.9, 1.1]


def batch(texts: list[str], models: list[tuple[str, str]], task: str = "t", start: float = 0.0) -> list[Answer]:
    out = []
    for i, text in enumerate(texts):
        model, family = models[i % len(models)]
        result = GenerateResult(
            request_id=f"{task}-{i}",
            text=text,
            model=model,
            family=family,
            tier="local",
            target="h",
            task=task,
            provenance=Provenance(
                model=model,
                family=family,
                tier="local",
                target="h",
                temperature=TEMPS[i % 3],
                top_p=0.9,
                prompt_variant=["direct", "plan-first"][i % 2],
            ),
        )
        out.extend(answers_of(result, start + i))
    return out


def test_renamed_variables_docstrings_and_comments_are_one_approach() -> None:
    """Six iterative Fibonacci answers differing only in names, comments and prose around the code."""
    shapes = [structure(code_of(t)) for t in FIB_SAME]
    assert all(s is not None for s in shapes)
    assert len({tuple(sorted(s.items())) for s in shapes if s is not None}) == 1
    assert metrics(batch(FIB_SAME, ONE_MODEL)).unique_approaches == 1


def test_different_algorithms_are_different_approaches() -> None:
    m = metrics(batch(FIB_DIVERSE, TWO_FAMILIES))
    assert m.code_answers == 6
    assert m.unique_approaches == 6
    assert m.ast_diversity is not None and m.ast_diversity > 0.3


def test_code_is_found_in_fences_or_as_a_whole_program_and_prose_is_not_code() -> None:
    assert code_of("```python\nx = 1\n```") == "x = 1"
    assert code_of("def f():\n    return 1\n") is not None
    assert code_of("Paris") is None  # parses as an expression, is not a program
    assert code_of("The sky is blue because of scattering.") is None
    assert code_of("```js\nconst x = 1;\n```") is None  # not Python: treated as prose


def test_structural_similarity_is_one_for_the_same_structure_and_lower_otherwise() -> None:
    a, b = structure(code_of(FIB_SAME[0])), structure(code_of(FIB_SAME[1]))
    c = structure(code_of(FIB_DIVERSE[0]))
    assert a is not None and b is not None and c is not None
    assert structural_similarity(a, b) == 1.0
    assert structural_similarity(a, c) < 0.7


@pytest.mark.parametrize(("diverse", "same"), [(FIB_DIVERSE, FIB_SAME), (SKY_DIVERSE, SKY_SAME)], ids=["code", "prose"])
def test_a_diverse_two_family_batch_scores_higher_than_a_single_model_batch(
    diverse: list[str], same: list[str]
) -> None:
    """Without an embedder (prose grouped lexically); the embedder test does the same with MiniLM."""
    d, s = metrics(batch(diverse, TWO_FAMILIES)), metrics(batch(same, ONE_MODEL))
    assert d.diversity_score > s.diversity_score + 0.3
    assert d.unique_approaches >= 5 and s.unique_approaches == 1
    assert d.model_families == 2 and s.model_families == 1
    assert d.top_model_share == 0.5 and s.top_model_share == 1.0
    assert d.family_evenness > 0 and s.family_evenness == 0.0


def test_temperature_variance_and_prompt_variants() -> None:
    m = metrics(batch(SKY_SAME, ONE_MODEL))
    assert m.temperature_variance == pytest.approx(float(np.var([0.7, 0.9, 1.1, 0.7, 0.9, 1.1])))
    assert m.prompt_variants == 2


def test_embedding_diversity_is_the_mean_pairwise_cosine_distance() -> None:
    same = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    orthogonal = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert embedding_diversity(same) == pytest.approx(0.0)
    assert embedding_diversity(orthogonal) == pytest.approx(1.0)


def test_prose_is_grouped_by_embedding_similarity_when_vectors_are_there() -> None:
    """Two answers with near-parallel vectors are one approach, a third orthogonal one is another."""
    base = batch(SKY_DIVERSE[:3], TWO_FAMILIES)
    vectors = [np.array([1.0, 0.0]), np.array([0.99, 0.141]), np.array([0.0, 1.0])]
    with_vectors = [replace(a, vector=v / np.linalg.norm(v)) for a, v in zip(base, vectors, strict=True)]
    m = metrics(with_vectors)
    assert m.unique_approaches == 2
    assert m.embedding_diversity is not None and 0.3 < m.embedding_diversity < 0.8


def test_a_window_summary_has_overall_figures_and_one_entry_per_task() -> None:
    answers = batch(FIB_DIVERSE, TWO_FAMILIES, task="fib") + batch(SKY_SAME, ONE_MODEL, task="sky", start=10)
    s = summarise(answers)
    assert set(s.tasks) == {"fib", "sky"} and s.groups == 2
    assert s.overall["answers"] == 12 and s.overall["model_families"] == 2 and s.overall["tasks"] == 2
    assert s.overall["unique_approaches"] == 7  # 6 for fib + 1 for sky
    assert s.tasks["fib"].diversity_score > s.tasks["sky"].diversity_score
    only = summarise(answers, task="sky")
    assert only.overall["answers"] == 6 and list(only.tasks) == ["sky"]


def test_a_fan_out_result_yields_one_answer_per_response_grouped_by_its_request() -> None:
    responses = [
        Response(
            request_id=f"p-{i}",
            text=t,
            provenance=Provenance(model=m, family=f, tier="local", target="h", temperature=0.7),
        )
        for i, (t, (m, f)) in enumerate(zip(FIB_DIVERSE[:2], TWO_FAMILIES, strict=True))
    ]
    result = GenerateResult(
        request_id="p", text="x", model="diverse", family="mixed", tier="local", target="fanout", responses=responses
    )
    answers = answers_of(result, 5.0)
    assert [a.request_id for a in answers] == ["p-0", "p-1"]
    assert {a.group for a in answers} == {"p"} and {a.family for a in answers} == {"llama", "qwen"}
