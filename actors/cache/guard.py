"""Hard refusals (pure): differences that always change the question, checked first by the verifier.

Sentence embeddings score "convert 5 miles to km" and "convert 6 miles to km" at 0.99 and "why is my code
not working" / "why is my code working" at 0.97. Some differences are exact and explainable, so a rule
refuses them whatever a model says. ``check(query, cached)`` refuses a candidate when

    code, quotes  code spans or quoted strings differ
    numbers       the numbers differ or come in another order (digits and number words: "five" == "5");
                  a lone "one" / "1" on one side is not a difference ("one example" / "an example")
    negation      one side negates more often ("not", "never", "n't", "without", "no", "except", ...)
    prefix        a word faces the same word with a negating prefix ("root" / "non-root", "safe" /
                  "unsafe", "install" / "uninstall", "valid" / "invalid", "connect" / "disconnect")
    operators     the arithmetic next to the numbers differs ("2x + 11" / "2x - 11")
    direction     the same word moved across a directional word: "from A to B" / "from B to A", "X faster
                  than Y" / "Y faster than X" (both words on both sides, another one after "to" / "than")

Everything softer (synonyms, reorderings, other names, swapped roles, added constraints, another scope)
is the word-by-word comparison's (:mod:`actors.cache.diff`) and the verifier's call
(:mod:`actors.cache.verifier`). Inputs are :func:`actors.cache.normalize.clean` texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|(?<![A-Za-z])'([^'\n]{1,200})'(?![A-Za-z])")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?(?:[._+#:/-]+[A-Za-z0-9]+)*[+#]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_OPERAND_L = r"(?:(?<=\d)|(?<=\d[A-Za-z])|(?<=\b[A-Za-z])|(?<=\)))"
_OPERAND_R = r"(?=\s*(?:\d|\(|[A-Za-z](?![A-Za-z])))"
_OPERATOR = re.compile(_OPERAND_L + r"\s*([-+*/^=<>×÷])" + _OPERAND_R)
DIRECTIONAL = ("to", "into", "from", "than", "onto", "toward", "towards")

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9", "dozen": "12", "twice": "x2",
    "double": "x2", "triple": "x3", "third": "#3", "fourth": "#4", "fifth": "#5", "sixth": "#6", "seventh": "#7",
    "eighth": "#8", "ninth": "#9", "tenth": "#10",
}  # fmt: skip
NEGATIONS = {
    "not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "without", "cannot", "except",
    "excluding",
}  # fmt: skip
NEGATING_PREFIXES = ("non", "un", "dis", "in", "im", "il", "ir", "anti", "de")
# function words: they never name what a question is about
STOPWORDS = set(
    """
    a an the this that these those it its i me my mine we us our you your yours he him his she her they them
    their is are was were be been being am do does did doing done have has had having will would shall should can
    could may might must of in on at for with by about as and or but if then so such there here some any each
    every all both either which what who whom whose when where why how whether please kindly tell show give let
    know want need like just also very really actually quite hi hello hey thanks thank thx cheers okay ok
    i'm i've i'd i'll you're what's how's it's that's there's let's who's where's
    to from into onto than vs versus over before after toward towards per via through between within
    """.split()
)  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


OK = Verdict(True)


@dataclass(frozen=True)
class Parsed:
    code: list[str]
    quoted: list[str]
    words: list[str]  # lower-case tokens of the prose, in order (negations included)
    named: set[str]  # lower-case tokens that look like names in the original (capitals, digits, symbols)
    numbers: list[str]  # in order: "divide 10 by 2" is not "divide 2 by 10"
    negations: int


def parse(text: str) -> Parsed:
    code = _CODE.findall(text)
    prose = _CODE.sub(" ", text)
    quoted = [(a or b).casefold() for a, b in _QUOTED.findall(prose)]
    words: list[str] = []
    named: set[str] = set()
    numbers: list[str] = []
    negations = 0
    prose = _THOUSANDS.sub("", prose)
    prev_end = 0
    for m in _TOKEN.finditer(prose):
        raw = m.group()
        word = raw.casefold().replace("’", "'")
        # after a sentence end: what lies between the previous token and this one ends in [.?!:] (the
        # previous token itself never does); only the gap is scanned, so the loop stays linear
        gap = prose[prev_end : m.start()].rstrip()
        initial = m.start() == 0 or gap[-1:] in (".", "?", "!", ":")
        prev_end = m.end()
        looks_named = any(c.isupper() for c in raw[1:]) or (raw[0].isupper() and not initial)
        if (looks_named and len(raw) > 1 and word not in STOPWORDS) or (
            not raw.isdigit() and (any(c.isdigit() for c in raw) or any(c in "._+#:/" for c in raw.strip("+#")))
        ):
            named.add(word)
        if word.endswith("n't") or word in NEGATIONS:
            negations += 1
        if word in NUMBER_WORDS:
            numbers.append(NUMBER_WORDS[word])
        elif "-" in word and any(p in NUMBER_WORDS for p in word.split("-")):  # "two-factor", "three-day"
            numbers.extend(NUMBER_WORDS[p] for p in word.split("-") if p in NUMBER_WORDS)
        else:
            numbers.extend(_NUMBER.findall(raw))
        words.append(word)
    return Parsed(code, quoted, words, named, numbers, negations)


def _prefixed(a: set[str], b: set[str]) -> tuple[str, str] | None:
    """A word of one side that is a word of the other side behind a negating prefix."""
    for x, y in ((a - b, b - a), (b - a, a - b)):
        for w in x:
            for prefix in NEGATING_PREFIXES:
                rest = w[len(prefix) :].lstrip("-")
                if w.startswith(prefix) and len(rest) >= 4 and rest in y:
                    return w, rest
    return None


def _operators(text: str) -> list[str]:
    return _OPERATOR.findall(_CODE.sub(" ", text))


def _after(words: list[str], i: int) -> str | None:
    """The first word after position ``i`` that is not a function word."""
    return next((w for w in words[i + 1 :] if w not in STOPWORDS), None)


def _direction(a: list[str], b: list[str]) -> str:
    """A word that follows a directional word on one side and another word's place on the other."""
    common = set(a) & set(b)
    for d in DIRECTIONAL:
        objs_a = {o for i, w in enumerate(a) if w == d and (o := _after(a, i)) is not None}
        objs_b = {o for i, w in enumerate(b) if w == d and (o := _after(b, i)) is not None}
        if not objs_a or not objs_b or objs_a == objs_b:
            continue
        moved = (objs_a ^ objs_b) & common
        if len(moved) >= 2 or (moved and objs_a & common and objs_b & common):
            return f"{d} {sorted(objs_a)} / {sorted(objs_b)}"
    return ""


def _parts(words: list[str]) -> set[str]:
    """Words and the pieces of hyphenated words ("non-root" -> non-root, non, root)."""
    out = set(words)
    for w in words:
        if "-" in w:
            out.update(p for p in w.split("-") if p)
    return out


def check(query: str, cached: str) -> Verdict:
    """Whether no exact difference keeps ``cached``'s answer from answering ``query``."""
    a, b = parse(query), parse(cached)
    if a.code != b.code:
        return Verdict(False, "code differs")
    if a.quoted != b.quoted:
        return Verdict(False, "quoted text differs")
    if a.numbers != b.numbers and [n for n in a.numbers if n != "1"] != [n for n in b.numbers if n != "1"]:
        return Verdict(False, f"numbers differ: {a.numbers} vs {b.numbers}")
    if a.negations != b.negations:
        return Verdict(False, "negation differs")
    if _operators(query) != _operators(cached):
        return Verdict(False, "arithmetic differs")
    moved = _direction(a.words, b.words)
    if moved:
        return Verdict(False, f"direction differs: {moved}")
    hyphen_a, hyphen_b = _parts(a.words), _parts(b.words)
    pair = _prefixed(hyphen_a, hyphen_b)
    if pair is None and "non" in hyphen_a ^ hyphen_b:
        pair = ("non-", "")
    if pair:
        return Verdict(False, f"negating prefix: {pair[0]!r} / {pair[1]!r}")
    return OK


_SUFFIXES = (
    ("ization", ""), ("isation", ""), ("izing", ""), ("ising", ""), ("ized", ""), ("ised", ""), ("izes", ""),
    ("ises", ""), ("ize", ""), ("ise", ""), ("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""),
)  # fmt: skip


def stem(word: str) -> str:
    """A light stemmer: enough to see "sorting" in "sort", "lists" in "list", "summary" in "summarize"."""
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + repl
            break
    if word.endswith("y") and len(word) >= 5:
        word = word[:-1]
    return word
