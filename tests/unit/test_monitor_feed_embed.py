"""The monitor's answers get their vectors from the embedder's own coalescing ``embed`` (weights/embedder.py): only
answers of a group are embedded, each keeps a row of its own, and a failing embedder leaves the answers without
vectors (grouped lexically) instead of losing them. Past ``monitor.embed_per_s`` (in the results' own time) an
answer is counted but not sampled, a fan-out all or nothing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from actors.diversity_monitor.board import Board
from actors.diversity_monitor.diversity import MAX_GROUP, Answer
from actors.diversity_monitor.feed import Feed
from actors.diversity_monitor.metrics import Metrics
from actors.diversity_monitor.window import Observations
from schemas.codec import OUTCOME
from schemas.result import GenerateResult, Provenance, Response


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


# --- the embedding allowance: answers past monitor.embed_per_s are counted, not sampled -----------------------


class Quiet:
    """What ``Feed.result`` needs besides the embedder: real windows, metrics and board; grading recorded."""

    def __init__(self, embedder: Recording | None, per_s: float) -> None:
        self.obs = Observations(horizon=3600.0)
        self.metrics = Metrics(lambda: None)  # type: ignore[arg-type,return-value]
        self.graded: list[str] = []
        self.feed = Feed(
            self.obs, self.metrics, Board(10, 10), 3600.0, grade=self._grade, tail=lambda line: None,
            embedder=lambda: embedder, embed_per_s=per_s,
        )  # fmt: skip

    async def _grade(self, subject: str, outcome: Any) -> None:
        self.graded.append(outcome.request_id)

    def unsampled(self) -> float:
        return self.metrics.registry.get_sample_value("orchestra_answers_unsampled_total") or 0.0


def _encoded(i: int, task: str | None, fanout: int = 0) -> bytes:
    prov = Provenance(model="m", family="f", tier="local", target="h")
    if fanout:
        children = [Response(request_id=f"r{i}-{k}", text=f"answer {i}.{k}", provenance=prov) for k in range(fanout)]
        result = GenerateResult(request_id=f"r{i}", text="", model="m", family="f", tier="local", target="h",
                                task=task, responses=children)  # fmt: skip
    else:
        result = GenerateResult(request_id=f"r{i}", text=f"answer {i}", model="m", family="f", tier="local",
                                target="h", task=task, provenance=prov)  # fmt: skip
    return OUTCOME.encode(result)


async def test_a_burst_of_a_whole_sample_is_embedded_then_the_rate_holds_in_the_results_own_time() -> None:
    embedder = Recording()
    q = Quiet(embedder, per_s=10.0)
    t0 = time.time() - 100.0  # inside the horizon; the allowance runs on the results' times, not the clock
    for i in range(MAX_GROUP + 50):  # all at one instant: a sample's worth passes, the rest is counted only
        await q.feed.result("orch.result.gateway.x", _encoded(i, "task-1"), t0, live=True)
    assert sum(len(c) for c in embedder.calls) == MAX_GROUP
    assert q.unsampled() == 50
    assert q.obs.recent.total(t0 - 1, t0 + 1).answers == MAX_GROUP + 50  # every answer counted in the mix
    assert len(q.graded) == MAX_GROUP + 50  # grading sees every live answer
    sampled = q.obs.samples.window(t0 - 1, t0 + 1)
    assert len(sampled) == MAX_GROUP and all(a.vector is not None for a in sampled)
    # 10 s of results' time later, 20 per second for 10 s: about 10 per second are embedded
    for k in range(200):
        at = t0 + 10.0 + k * 0.05
        await q.feed.result("orch.result.gateway.x", _encoded(1000 + k, "task-1"), at, live=True)
    embedded_after = sum(len(c) for c in embedder.calls) - MAX_GROUP
    assert 100 + 95 <= embedded_after <= 100 + 105  # 10 s refilled before, ~100 more over the 10 s of traffic
    assert q.unsampled() == 50 + 200 - embedded_after


async def test_a_fanout_is_embedded_whole_or_not_at_all_and_answers_without_a_group_are_never_limited() -> None:
    embedder = Recording()
    q = Quiet(embedder, per_s=1.0)
    t0 = time.time() - 100.0
    for i in range(MAX_GROUP - 2):
        await q.feed.result("orch.result.gateway.x", _encoded(i, "task-1"), t0, live=True)
    await q.feed.result("orch.result.gateway.x", _encoded(500, None, fanout=5), t0, live=True)  # 2 left: not 5
    assert not [a for a in q.obs.samples.window(t0 - 1, t0 + 1) if a.group == "r500"]
    assert q.unsampled() == 5
    await q.feed.result("orch.result.gateway.x", _encoded(600, None), t0, live=True)  # no group: no embedding
    assert q.unsampled() == 5
    await q.feed.result("orch.result.gateway.x", _encoded(501, None, fanout=5), t0 + 3.0, live=True)
    fanout = [a for a in q.obs.samples.window(t0 - 1, t0 + 4) if a.group == "r501"]
    assert len(fanout) == 5 and all(a.vector is not None for a in fanout)  # 2 + 3 s refilled: it fits, all of it


@pytest.mark.parametrize(("per_s", "embedder"), [(0.0, Recording()), (1.0, None)], ids=["no-limit", "lexical"])
async def test_no_allowance_or_no_embedder_samples_every_answer(per_s: float, embedder: Recording | None) -> None:
    q = Quiet(embedder, per_s=per_s)
    t0 = time.time() - 100.0
    for i in range(MAX_GROUP + 20):
        await q.feed.result("orch.result.gateway.x", _encoded(i, f"task-{i % 2}"), t0, live=True)
    assert q.unsampled() == 0
    assert len(q.obs.samples.window(t0 - 1, t0 + 1)) == MAX_GROUP + 20
