"""The monitor's answers get their vectors from the embedder's own coalescing ``embed`` (weights/embedder.py): only
answers of a group are embedded, each keeps a row of its own, and a failing embedder leaves the answers without
vectors (grouped lexically) instead of losing them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from actors.diversity_monitor.diversity import Answer
from actors.diversity_monitor.feed import Feed


class Recording:
    """An embedder that gives each text a distinct direction and records every call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def embed(self, texts: list[str]) -> Any:
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("the model is gone")
        return np.stack([np.full(4, float(len(t)), np.float32) for t in texts])


def _feed(embedder: Recording | None) -> Feed:
    return Feed(None, None, None, 3600.0, grade=None, tail=None, embedder=lambda: embedder)  # type: ignore[arg-type]


def _answers() -> list[Answer]:
    return [
        Answer(0.0, "a", "m", "f", group="task-1", text="one"),
        Answer(0.0, "b", "m", "f", group=None, text="not in a group"),
        Answer(0.0, "c", "m", "f", group="task-1", text="three!"),
        Answer(0.0, "d", "m", "f", group="task-2", text=""),
    ]


async def test_only_answers_of_a_group_are_embedded_each_with_a_unit_row_of_its_own() -> None:
    embedder = Recording()
    out = await _feed(embedder).embed(_answers())
    assert embedder.calls == [["one", "three!"]]  # one call for the result, not one per answer
    assert [a.request_id for a in out] == ["a", "b", "c", "d"]
    assert out[1].vector is None and out[3].vector is None
    for answer in (out[0], out[2]):
        assert answer.vector.shape == (4,)
        assert np.isclose(np.linalg.norm(answer.vector), 1.0)
        assert answer.vector.base is None  # its own array, not a view keeping the batch alive


@pytest.mark.parametrize("embedder", [Recording(fail=True), None], ids=["failing", "none"])
async def test_without_a_working_embedder_the_answers_are_kept_without_vectors(embedder: Recording | None) -> None:
    answers = _answers()
    out = await _feed(embedder).embed(answers)
    assert [a.request_id for a in out] == ["a", "b", "c", "d"]
    assert all(a.vector is None for a in out)
