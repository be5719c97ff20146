"""The one GenerateResult builder: what every tier copies from the dispatch it answers."""

from __future__ import annotations

from bus.outcomes import build_result, provenance_of
from schemas.dispatch import Dispatch, Target
from schemas.request import Sampling, make_request
from schemas.result import Timings, Usage


def test_a_result_copies_the_request_and_the_dispatch_for_every_tier() -> None:
    """Attempt, client key, task, parent, budget hold and the variant's sampling reach the result, with
    the answering worker's provenance (what a new field must go through once, not once per tier)."""
    req = make_request(prompt="hi", client_key="key-1", task="task-1", sampling=Sampling(temperature=0.2))
    d = Dispatch(
        request=req,
        target=Target(tier="together", model="m-1", family="", provider="together"),
        attempt=2,
        reservation_id="res-9",
        reserved_nanos=700,
        sampling=Sampling(temperature=0.9, top_p=0.5),
        prompt_variant="terse",
        parent_id="parent-1",
    )
    p = provenance_of(d, family="llama", tier="together", target="together")
    r = build_result(
        d, p, text="yo", finish_reason="stop", usage=Usage(output_tokens=1), cost_usd=0.5, timings=Timings(), now=5.0
    )
    assert (r.request_id, r.attempt, r.client_key, r.task, r.parent_id) == (req.id, 2, "key-1", "task-1", "parent-1")
    assert (r.reservation_id, r.reserved_nanos, r.created_at, r.cost_usd) == ("res-9", 700, 5.0, 0.5)
    assert (r.model, r.family, r.tier, r.target) == ("m-1", "llama", "together", "together")
    assert r.provenance is not None and (r.provenance.temperature, r.provenance.top_p) == (0.9, 0.5)
    assert r.provenance.prompt_variant == "terse" and r.tool_calls == [] and r.choices == []
