"""A consumer that lingers keeps each message's slot for the linger, so it can take at most
``concurrency / linger`` messages a second. Every actor's lingering consumer must keep up with the stack
(bench/soak.py measured ~1,400 req/s on two vCPUs, and the budget_guard with 32 slots fell behind at ~900)."""

from __future__ import annotations

import argparse
import functools
import importlib
import re
from pathlib import Path

import pytest

from schemas.config import load_config

REPO = Path(__file__).resolve().parents[2]
ACTORS = sorted(p.parent.name for p in (REPO / "actors").glob("*/__main__.py"))
ARGS = {"gpu_host": ["--host", "cpu0"]}
MIN_RATE = 10_000  # messages a second a lingering consumer can take, at the least


@functools.cache
def actor_of(name: str) -> object:
    source = (REPO / "actors" / name / "__main__.py").read_text()
    found = re.search(r"from (actors\.\S+) import (\w+)", source)
    assert found, f"actors/{name}/__main__.py names no actor class"
    cls = getattr(importlib.import_module(found.group(1)), found.group(2))
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    return cls.from_args(load_config(REPO / "configs" / "local"), parser.parse_args(ARGS.get(name, [])))


@pytest.mark.parametrize("name", ACTORS)
def test_a_lingering_consumer_has_the_slots_to_keep_up(name: str) -> None:
    specs = actor_of(name).consumers()  # type: ignore[attr-defined]
    assert specs or name == "gateway", f"{name} has no consumers"
    for spec in specs:
        if spec.linger > 0:
            rate = spec.concurrency / spec.linger
            assert rate >= MIN_RATE, f"{name}/{spec.durable}: {spec.concurrency} slots / {spec.linger} s = {rate:.0f}/s"


def test_the_actors_that_fold_results_linger() -> None:
    """The guard, cache and monitor take results in batches (so this test checks something)."""
    lingering = {n for n in ACTORS for s in actor_of(n).consumers() if s.linger > 0}  # type: ignore[attr-defined]
    assert {"budget_guard", "cache", "diversity_monitor"} <= lingering
