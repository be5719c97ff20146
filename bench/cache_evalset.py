"""The cache's evaluation set: labelled prompt pairs, split once into a development and a test part.

    python -m bench.cache_evalset          # (re)writes bench/data/cache_eval.jsonl (deterministic)

Three sources, so that no category is one template's wording:

    templates  bench/data/cache_templates.yaml: families of slot templates in several phrasing habits; hits
               pair two variants with the same slots (paraphrase, reorder, synonym), or wrap one in a
               politeness formula or a surface change; near-misses change one entity, number, swap two roles,
               or use a variant that negates, narrows or widens the scope, adds a constraint or asks for
               another action
    hand       bench/data/cache_pairs.jsonl (the first hand-written set) and cache_pairs_more.jsonl (a second,
               written in other styles)

Each row: id, label (hit / miss), kind (the category), domain, source, group, split, a, b, and ma / mb: what a
and b mean where known (a template family with its slot values; for hand-written prompts the groups in
cache_same.json), so that two prompts with one meaning count as equivalent even when no pair joins them
(the shared-scope benchmark looks every "b" up among all "a"s of its part). The split is fixed
by a hash of the row's group: a template family (so the test part holds families, and politeness formulas,
never seen while tuning) or, for hand-written pairs, the pair's first prompt. Tune on "dev" only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parent / "data"
OUT = DATA / "cache_eval.jsonl"
TEST_SHARE = 0.4
PER_FAMILY = 5  # slot assignments drawn per family

# politeness and chatter around a question (the question keeps its meaning); {q} as written, {lq} lower-cased
POLITE = [
    "Please, {q}", "Hi! {q} Thanks in advance.", "hey quick question - {lq}", "{q} Thank you!",
    "Could you tell me: {lq}",
    "Hello, {q}", "I was wondering, {lq}", "{q} thx", "Kindly let me know, {lq}", "Dear assistant, {q}",
    "{q} :)", "Sorry to bother you, but {lq}", "Question for you: {lq}", "{q} Many thanks.", "Help please! {q}",
    "Hi there, {lq}", "Good morning! {q}", "Can you help me with this? {q}", "{q} Cheers!", "Hey! {lq} Thanks a lot",
    "I have a question. {q}", "Would you mind telling me, {lq}", "{q} Appreciate it.", "Ok, so: {lq}",
]  # fmt: skip


# one-word synonyms (either direction) that keep the question; split like the formulas above
SYNONYMS = [
    ("convert", "transform"), ("make", "create"), ("delete", "remove"), ("show", "display"), ("find", "locate"),
    ("fast", "quick"), ("faster", "quicker"), ("fastest", "quickest"), ("big", "large"), ("biggest", "largest"),
    ("easiest", "simplest"), ("write", "compose"), ("check", "verify"), ("see", "view"), ("read", "load"),
    ("open", "unblock"), ("start", "begin"), ("need", "require"), ("help", "assist"), ("buy", "purchase"),
    ("explain", "clarify"), ("way", "method"), ("steps", "procedure"), ("good", "decent"), ("trip", "journey"),
    ("get", "obtain"), ("copy", "duplicate"), ("happen", "occur"), ("reason", "cause"), ("tell", "inform"),
    ("temperature", "temp"), ("recipe", "preparation"), ("symptoms", "signs"), ("command", "instruction"),
    ("rename", "retitle"), ("project", "codebase"), ("file", "document"), ("cost", "price"), ("error", "exception"),
]  # fmt: skip


def synonym(text: str, rng: random.Random, pool: list[tuple[str, str]]) -> str | None:
    """``text`` with one word swapped for a listed synonym, or None when none applies."""
    words = text.split(" ")
    options = []
    for i, w in enumerate(words):
        bare = w.strip("?.,:!").lower()
        for x, y in pool:
            for src, dst in ((x, y), (y, x)):
                if bare == src:
                    if w[0].islower():
                        swapped = w.lower().replace(src, dst)
                    else:
                        swapped = w.replace(w[0], w[0].lower(), 1).replace(src, dst).capitalize()
                    options.append((i, swapped))
    if not options:
        return None
    i, new = rng.choice(options)
    return " ".join(words[:i] + [new] + words[i + 1 :])


def h(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of(group: str) -> str:
    return "test" if h(group) < TEST_SHARE else "dev"


def surface(text: str, rng: random.Random) -> str:
    """Case, spacing and punctuation only."""
    choice = rng.randrange(5)
    if choice == 0:
        return text.lower().rstrip("?.!")
    if choice == 1:
        return text.upper()
    if choice == 2:
        return text.replace(" ", "  ", 2).rstrip("?.") + "??"
    if choice == 3:
        return text.replace(",", "").replace(":", "").replace("'", "")
    return text[0].lower() + text[1:] + " !"


def polite(text: str, rng: random.Random, pool: list[str]) -> str:
    form = rng.choice(pool)
    return form.format(q=text, lq=text[0].lower() + text[1:])


def fill(template: str, values: dict[str, str]) -> str:
    return template.format(**{k: v.split("|")[0] for k, v in values.items()})


def fill_alt(template: str, values: dict[str, str]) -> str:
    """The same with the last synonym of each slot value."""
    return template.format(**{k: v.split("|")[-1] for k, v in values.items()})


def family_pairs(
    fam: dict[str, Any],
    rng: random.Random,
    pools: dict[str, list[str]],
    synonyms: dict[str, list[tuple[str, str]]],
) -> list[dict[str, Any]]:
    split = split_of(fam["id"])
    slots: dict[str, list[str]] = fam["slots"]
    hits: list[str] = fam["hit"]
    out: list[dict[str, Any]] = []

    def add(label: str, kind: str, a: str, b: str, mb: str = "") -> None:
        """``mb``: what b means when it is not what a means (a's meaning: the family and its slot values)."""
        ma = f"{fam['id']}:{sorted(values.items())}"
        if a != b:
            out.append({"label": label, "kind": kind, "domain": fam["domain"], "source": "template",
                        "group": fam["id"], "split": split, "a": a, "b": b, "ma": ma,
                        "mb": ma if label == "hit" else mb or f"{ma}:{kind}:{b}"})  # fmt: skip

    for _ in range(PER_FAMILY):
        values = {k: rng.choice(v) for k, v in slots.items()}
        i, j = rng.sample(range(len(hits)), 2)
        add("hit", "paraphrase", fill(hits[i], values), fill(hits[j], values))
        k = rng.randrange(len(hits))
        add(
            "hit",
            "politeness",
            fill(hits[k], values),
            polite(fill(hits[rng.randrange(len(hits))], values), rng, pools[split]),
        )
        if rng.random() < 0.5:
            add("hit", "surface", fill(hits[k], values), surface(fill(hits[k], values), rng))
        for r in fam.get("reorder", [])[:1]:
            add("hit", "reorder", fill(hits[0], values), fill(r, values))
        if any("|" in v for v in values.values()):
            add("hit", "synonym", fill(hits[k], values), fill_alt(hits[k], values))
        swapped = synonym(fill(hits[k], values), rng, synonyms[split])
        if swapped is not None:
            add("hit", "synonym", fill(hits[k], values), swapped)
        a_tpl, b_tpl = rng.choice(hits), rng.choice(hits)
        for slot in fam.get("entity", []):
            others = [v for v in slots[slot] if v != values[slot]]
            other = {**values, slot: rng.choice(others)}
            add("miss", "entity", fill(a_tpl, values), fill(b_tpl, other), f"{fam['id']}:{sorted(other.items())}")
        for slot in fam.get("number", []):
            others = [v for v in slots[slot] if v != values[slot]]
            other = {**values, slot: rng.choice(others)}
            add("miss", "number", fill(a_tpl, values), fill(b_tpl, other), f"{fam['id']}:{sorted(other.items())}")
        if "swap" in fam:
            x, y = fam["swap"]
            if values[x] != values[y]:
                other = {**values, x: values[y], y: values[x]}
                add("miss", "swap", fill(a_tpl, values), fill(b_tpl, other), f"{fam['id']}:{sorted(other.items())}")
        for kind, variants in fam.get("near", {}).items():
            a = fill(rng.choice(hits), values)
            i = rng.randrange(len(variants))
            add("miss", kind, a, fill(variants[i], values), f"{fam['id']}:{sorted(values.items())}:{kind}{i}")
    return out


def hand_pairs() -> list[dict[str, Any]]:
    kinds = {"rephrase": "paraphrase", "opposite": "action", "unit": "entity", "language": "entity"}
    # prompts of the two hand-written sets that ask the same thing although no pair joins them
    meaning = {t.casefold(): f"same:{i}" for i, g in enumerate(json.loads((DATA / "cache_same.json").read_text()))
               for t in g}  # fmt: skip
    out = []
    for name in ("cache_pairs.jsonl", "cache_pairs_more.jsonl"):
        for line in (DATA / name).read_text().splitlines():
            if not line.strip():
                continue
            p = json.loads(line)
            group = f"{name}:{p['a'].casefold()}"
            out.append({"label": p["label"], "kind": kinds.get(p["kind"], p["kind"]), "domain": "mixed",
                        "source": name.removesuffix(".jsonl"), "group": group, "split": split_of(group),
                        "a": p["a"], "b": p["b"], "ma": meaning.get(p["a"].casefold(), ""),
                        "mb": meaning.get(p["b"].casefold(), "")})  # fmt: skip
    return out


def build() -> list[dict[str, Any]]:
    families = yaml.safe_load((DATA / "cache_templates.yaml").read_text())
    pools = {"dev": [p for p in POLITE if split_of(p) == "dev"], "test": [p for p in POLITE if split_of(p) == "test"]}
    synonyms = {s: [p for p in SYNONYMS if split_of(" ".join(p)) == s] for s in ("dev", "test")}
    rng = random.Random(15)
    rows = list(itertools.chain.from_iterable(family_pairs(f, rng, pools, synonyms) for f in families))
    rows += hand_pairs()
    seen: set[tuple[str, str]] = set()
    unique = []
    for r in rows:
        key = (r["a"].casefold(), r["b"].casefold())
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return [{"id": i + 1, **r} for i, r in enumerate(unique)]


def main() -> int:
    rows = build()
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for split in ("dev", "test"):
        part = [r for r in rows if r["split"] == split]
        hits = sum(r["label"] == "hit" for r in part)
        print(f"{split}: {len(part)} pairs ({hits} hit, {len(part) - hits} miss)")
    print(f"wrote {len(rows)} pairs to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
