"""Ensemble consensus, pure: contradiction checks, plain agreement, normalised ASTs, behaviour, the vote
and per-answer confidence (policy/consensus/)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from policy.consensus import code as codecheck
from policy.consensus.confidence import confidence, mean_token_probability
from policy.consensus.prose import contradiction, final_number, settled
from policy.consensus.vote import Thresholds, candidate, consensus, embed_text, judge
from schemas.result import TokenLogprob

TH = Thresholds()


def verdict(a: str, b: str, examples: list[str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return judge(candidate(a, **kw), candidate(b, **kw), examples or [], TH)  # type: ignore[arg-type]


def test_paris_and_not_paris_contradict_and_say_why() -> None:
    """The case word overlap got wrong: a negated answer is a contradiction, by an explainable check."""
    v = verdict("Paris", "not Paris")
    assert not v.agree and v.method == "contradiction" and "negation" in v.reason and "paris" in v.reason


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("Yes, the Earth is flat.", "No, the Earth is round.", "yes/no flip"),
        ("True.", "False.", "yes/no flip"),
        ("12 * 12 = 144", "12 * 12 = 124", "different numbers"),
        ("Eight.", "Six.", "different numbers"),
        ("The capital of France is Paris.", "The capital of France is Lyon.", "different answers"),
        ("Mercury.", "Venus.", "different answers"),
        ("The sky is blue.", "The sky is green.", "different answers"),
        ("UDP does not guarantee delivery.", "UDP guarantees delivery.", "negation"),
        ("The Sun is a star.", "The Sun isn't a star, it's a planet.", "negation"),
    ],
)
def test_contradictions_are_found_by_an_explainable_check(a: str, b: str, why: str) -> None:
    reason = contradiction(a, b)
    assert reason is not None and reason.startswith(why)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Paris", "It is Paris."),
        ("4", "The answer is 4."),
        ("2 + 2 = 4", "four"),
        ("3.14", "Pi is approximately 3.14159."),
        ("No, the Earth is roughly spherical.", "No. It is an oblate spheroid, not flat."),
        ("Paris is the capital city of France.", "France's capital is Paris, on the Seine."),
        ("Shakespeare wrote Hamlet.", "Hamlet was written by William Shakespeare."),
        ("Paris", "The capital is not London, it is Paris."),
    ],
)
def test_agreeing_answers_are_not_called_contradictions(a: str, b: str) -> None:
    assert contradiction(a, b) is None


def test_plain_agreement_needs_no_embedding() -> None:
    assert settled("4", "The answer is 4.") == "same number: 4"
    assert settled("Yes.", "Yes, water makes things wet.") == "same yes/no: yes"
    assert settled("Paris", "It is Paris.") is not None
    assert final_number("A week has seven days.") == 7 and final_number("1,024 bytes") == 1024


def test_without_embeddings_prose_falls_back_to_word_overlap_and_says_so() -> None:
    v = verdict("Unit tests catch regressions early.", "Regressions are caught early by unit tests, mostly.")
    assert v.method == "lexical" and v.agree and "no embedding" in v.reason


def test_embedding_similarity_decides_what_the_checks_leave_open() -> None:
    near, far = [1.0, 0.0], [math.cos(1.2), math.sin(1.2)]  # cosine 1.0 and 0.36
    a = candidate("Unit tests catch regressions early.", vector=near)
    b = candidate("They find bugs quickly when code changes.", vector=near)
    c = candidate("They find bugs quickly when code changes.", vector=far)
    assert judge(a, b, [], TH).agree and judge(a, b, [], TH).method == "embedding"
    assert not judge(a, c, [], TH).agree


def test_equal_asts_agree_whatever_the_names_and_docstrings() -> None:
    a = '```python\ndef reverse(s: str) -> str:\n    """Reverse."""\n    return s[::-1]\n```'
    b = "def flip(text):\n    return text[::-1]"
    assert codecheck.normalised(codecheck.code_of(a) or "") == codecheck.normalised(b)
    v = verdict(a, b)
    assert v.agree and v.method == "ast"


def test_different_asts_without_examples_are_not_shown_to_agree() -> None:
    """A max and a min differ in one character: MiniLM cannot tell, so only identical code would agree."""
    a = "def top(xs):\n    best = xs[0]\n    for x in xs:\n        if x > best:\n            best = x\n    return best"
    v = judge(candidate(a, vector=[1.0, 0.0]), candidate(a.replace(">", "<"), vector=[0.999, 0.04]), [], TH)
    assert not v.agree and v.method == "code-embedding"


def test_examples_come_from_doctests_and_asserts_in_the_prompt() -> None:
    prompt = "Write f.\n>>> f('abc')\n'cba'\nassert f('') == ''\nassert is_even(4), 'even'\nassert True"
    assert codecheck.examples_of(prompt) == ["f('abc')", "f('')", "is_even(4)"]


def test_behaviour_on_the_examples_decides_for_code() -> None:
    examples = ["f(1)", "f(2)"]
    same = judge(candidate("def f(n):\n    return n", behaviour=["ok:1", "ok:2"]),
                 candidate("def f(n):\n    return n * 1", behaviour=["ok:1", "ok:2"]), examples, TH)  # fmt: skip
    differ = judge(candidate("def f(n):\n    return n", behaviour=["ok:1", "ok:2"]),
                   candidate("def f(n):\n    return 1", behaviour=["ok:1", "ok:1"]), examples, TH)  # fmt: skip
    assert same.agree and same.method == "behaviour"
    assert not differ.agree and "f(2)" in differ.reason
    assert codecheck.compare_behaviour(["error:NameError"], ["timeout"], ["f(1)"]) is None  # proves nothing


def test_the_vote_clusters_agreeing_answers_and_escalates_below_threshold() -> None:
    cands = [candidate("Paris"), candidate("It is Paris."), candidate("London")]
    winner, c = consensus(cands, [0.5, 0.5, 0.9], 0.7)
    assert winner in (0, 1) and c.consistency == pytest.approx(1.0 / 1.9, abs=1e-3) and c.escalated
    assert len(c.pairs) == 3 and {p.method for p in c.pairs} == {"check", "contradiction"}
    _, agreed = consensus([candidate("4"), candidate("The answer is 4"), candidate("4.")], [0.5] * 3, 0.7)
    assert agreed.consistency == 1.0 and not agreed.escalated
    _, split = consensus([candidate("Paris"), candidate("not Paris")], [0.5, 0.5], 0.7)
    assert split.escalated and not split.pairs[0].agree


def test_confidence_comes_from_logprobs_then_measurement_then_the_labelled_rank() -> None:
    lps = [TokenLogprob(token="a", logprob=math.log(0.9)), TokenLogprob(token="b", logprob=math.log(0.5))]
    assert mean_token_probability(lps) == pytest.approx(0.7)
    assert confidence(lps, 0.3, 8) == (pytest.approx(0.7), "logprobs")
    assert confidence(None, 0.3, 8) == (0.3, "measured")
    assert confidence([], None, 8) == (0.8, "configured_rank")
    assert confidence(None, None, None) == (0.5, "none")


def test_long_answers_are_cut_at_a_word_before_embedding() -> None:
    text = embed_text("word " * 500)
    assert len(text) <= 600 and text.endswith("word")


def test_the_labelled_pair_set_has_both_splits_and_kinds() -> None:
    """bench/data/consensus_pairs.jsonl: at least 50 pairs, agree and contradict, prose/numeric/code in each split."""
    path = Path(__file__).resolve().parents[2] / "bench" / "data" / "consensus_pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) >= 50 and len({r["id"] for r in rows}) == len(rows)
    seen = {(r["split"], r["kind"], r["label"]) for r in rows}
    assert seen >= {(s, k, lab) for s in ("dev", "test") for k in ("prose", "numeric", "code")
                    for lab in ("agree", "contradict")}  # fmt: skip


def test_hostile_shapes_are_handled_in_one_pass() -> None:
    """200 KB of backticks, newlines or spaces: no regex backtracks over them (the suite's per-test
    timeout is the bound; quadratic patterns took 48 s on the backticks)."""
    assert codecheck.code_of("`" * 200_000) is None
    assert codecheck.examples_of("\n" * 200_000 + "assert f(1)" + " " * 100_000 + "== 2") == ["f(1)"]
    assert contradiction("is" + " " * 100_000 + "x", "y") == "different answers: 'x' vs 'y'"
    assert final_number("the answer is" + " " * 100_000 + "4") == 4  # the last number, found linearly


def test_fenced_code_of_another_language_is_not_python() -> None:
    text = "```sh\nls -l\n```\nthen\n```python\ndef f():\n    return 1\n```"
    assert codecheck.code_of(text) == "def f():\n    return 1"


def test_an_answer_that_echoes_the_prompt_gets_no_vote() -> None:
    """Issue 16's probe: Gemma gave the question back with a higher token probability than SmolLM2's answer."""
    prompt = "What is 2+2? Answer with a number."
    cands = [candidate("The answer to this classic math problem is 4."), candidate(prompt)]
    winner, c = consensus(cands, [0.63, 0.78], 0.7, prompt=prompt)
    assert winner == 0 and c.votes == {"answer-0": 0.63, "answer-1": 0.0}
    assert c.consistency == pytest.approx(0.63 / 1.41, abs=1e-3) and c.escalated
    assert not echoes_("The Earth is flat.", "Is the Earth flat?")


def echoes_(answer: str, prompt: str) -> bool:
    from policy.consensus.prose import echoes

    return echoes(answer, prompt)


async def test_a_failure_while_judging_still_answers_escalated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is lost: an unexpected error in the vote gives the first answer, escalated for review."""
    from actors.router import ensemble
    from schemas.request import make_request
    from schemas.result import Provenance, Response

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ensemble.vote, "consensus", broken)
    prov = Provenance(model="m", family="f", tier="local", target="cpu0")
    responses = [Response(request_id=f"r-{i}", text=t, provenance=prov) for i, t in enumerate(["a", "b"])]
    winner, c = await ensemble.judge(make_request(prompt="q"), responses, 0.7, embed=None, sandbox=False)
    assert winner == 0 and c.escalated and c.consistency == 0.0
