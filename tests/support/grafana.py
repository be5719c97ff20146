"""The metric names the lab's Grafana dashboard (docs/grafana/orchestra.json) queries, and the names an
exposition really has (its families and samples: ``_total``, ``_bucket``, ``_sum``, ``_count``...)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import REPO

DASHBOARD = REPO / "docs" / "grafana" / "orchestra.json"
METRIC = re.compile(r"\b(orchestra_[a-zA-Z0-9_]+)\b")


def queries(path: Path = DASHBOARD) -> dict[str, list[str]]:
    """Panel title -> its PromQL expressions (rows have none)."""
    doc = json.loads(path.read_text())
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in doc["panels"] if p["type"] != "row"}


def metrics_of(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def exposed(text: str) -> set[str]:
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))  # declared, maybe no sample yet
        names.update(sample.name for sample in family.samples)
    return names
