"""What two near-duplicate prompts differ in, word by word (pure; the lexicon is passed in).

After the hard refusals (:mod:`actors.cache.guard`), function words and social fillers ("hi", "thanks",
"could you tell me") are set aside and the content words of the two prompts compared:

    opposites       a word on one side faces its WordNet antonym on the other ("show" / "hide")   refused
    asks another    both ask with another question word ("why" / "when")                         refused
    another kind    a word faces a WordNet sister term: two kinds of one thing ("hour" / "day")  refused
    swapped roles   two words changed places with nothing between them but the same words
                    ("can dogs eat food for cats" / "can cats eat food for dogs")                refused
    moved number    a number now counts another thing ("42 litres in gallons" / "litres in 42 gallons")
    added clause    words on one side only, all after the last shared word ("... second hand")  refused
    added modifier  a word on one side only, not a verb, right before a shared word ("odd primes") refused

Anything else is a count of **unmatched** words: content words on one side without a counterpart, after
pairing words that WordNet calls synonyms in their usual senses, a broader verb asked for a narrower one
("remove" for "delete"), or an abbreviation ("temp" / "temperature"). A weak pair (a synonym only in a
rare sense, "say" / "pronounce"; a narrower verb asked) still counts as one. The verifier turns the count
into the cosine it demands (:mod:`actors.cache.verifier`). Moved phrases are no difference: a pair of words
that changed order with punctuation, a coordinator or a preposition between them ("In Go, how ..." /
"how ... in Go", "X or Y" / "Y or X").

Inputs are :func:`actors.cache.normalize.clean` texts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from actors.cache.normalize import strip_trailing

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?(?:[._+#/-]+[a-z0-9]+)*[+#]*|[,;:?!()]|\.(?=\s|$)|\s-\s")

FUNCTION = set(
    """
    a an the this that these those it its i me my mine we us our you your yours he him his she her they them
    their is are was were be been being am do does did doing done have has had having will would shall should
    can could may might must and or but if then so such there here some any each which what who whom whose
    when where why how whether just also really actually quite
    i'm i've i'd i'll you're what's how's it's that's there's let's who's where's whats hows
    to from into onto than vs versus over of in on at for with by about as via using through per within
    """.split()
)  # fmt: skip
# social fillers: greetings, thanks, softeners and requests for an answer (a closed class, like stop words)
SOCIAL = set(
    """
    please pls plz kindly hi hello hey dear greetings good morning afternoon evening thanks thank thx ty
    cheers appreciate appreciated grateful advance much lot many sorry apologies bother excuse wondering
    wonder question quick curious help assist assistant mind tell know let explain show give want need like
    ok okay well so yes hmm um anyone somebody someone guys folks friend buddy pal there again
    """.split()
)  # fmt: skip
# what a question asks for: "why" and "when" ask other things ("what" / "how" / "which" only frame one)
ASKING = {"why", "when", "where", "who", "whom", "whose"}
# function words that can be each other's opposites ("turn on" / "turn off", "before" / "after")
PARTICLES = {"on", "off", "in", "out", "up", "down", "over", "under", "before", "after", "above", "below"}
COORDINATORS = {"and", "or", "vs", "versus", "nor", "but", "plus", "&"}
SEPARATORS = {",", ";", ":", "?", "!", "(", ")", ".", "-"}
PREPOSITIONS = {"in", "on", "at", "for", "with", "by", "via", "using", "of", "from", "during", "within", "under"}
MATCHES = {"synonym", "abbrev", "broader"}
WEAK = {"rare synonym", "narrower verb"}
ABBREV_MIN = 3  # "temp" abbreviates "temperature"; "js" is too short to say


class Lexicon(Protocol):
    """What this module asks of :class:`actors.cache.lexicon.Lexicon`."""

    def relation(self, x: str, y: str) -> str | None: ...
    def bases(self, word: str) -> set[str]: ...
    def verb(self, word: str) -> bool: ...


@dataclass(frozen=True)
class Diff:
    """Unmatched content words on each side, weakly matched pairs, or an exact refusal."""

    only_query: tuple[str, ...] = ()
    only_cached: tuple[str, ...] = ()
    refusal: str = ""
    weak: tuple[str, ...] = ()  # "say~pronounce": matched on weak evidence, one difference each

    @property
    def unmatched(self) -> int:
        return len(self.only_query) + len(self.only_cached) + len(self.weak)


def words(text: str) -> list[str]:
    return [w.strip() for w in _WORD.findall(text.lower())]


def is_content(tok: str) -> bool:
    return tok[0].isalnum() and tok not in FUNCTION and tok not in SOCIAL


def content(tokens: list[str]) -> list[str]:
    """Content words; hyphenated compounds count by their parts ("for-loop" -> "loop")."""
    parts = (p for tok in tokens for p in (tok.split("-") if "-" in tok and tok[0] != "-" else [tok]))
    return [p for p in parts if p and is_content(p)]


class _Norm:
    """A word's dictionary form (the shortest WordNet base: "lists" -> list), else a crude stem; memoised."""

    def __init__(self, lex: Lexicon) -> None:
        self.lex, self.memo = lex, dict[str, str]()

    def __call__(self, word: str) -> str:
        found = self.memo.get(word)
        if found is None:
            found = self.memo[word] = self._norm(word)
        return found

    def _norm(self, word: str) -> str:
        bases = self.lex.bases(word)
        if bases:
            return min(bases, key=lambda b: (len(b), b))
        for suffix in ("ing", "ies", "es", "ed", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
        return word


def _abbrev(x: str, y: str) -> bool:
    short, long_ = sorted((x, y), key=len)
    return len(short) >= ABBREV_MIN and long_.startswith(short) and long_ != short


def pair_words(ea: list[str], eb: list[str], lex: Lexicon) -> tuple[list[str], list[str], list[tuple[str, str, bool]]]:
    """Pair one-side words (strong relations first): what stays unmatched on each side, and the pairs
    (query word, cached word, weak)."""
    left, right, matched = list(ea), list(eb), []
    for strength in (MATCHES, WEAK):
        for x in list(left):
            for y in right:
                if ("abbrev" if _abbrev(x, y) else lex.relation(x, y)) in strength:
                    left.remove(x)
                    right.remove(y)
                    matched.append((x, y, strength is WEAK))
                    break
    return left, right, matched


def _marked(tokens: list[str], i: int, j: int, marks: set[str]) -> bool:
    lo, hi = sorted((i, j))
    return any(t in marks for t in tokens[lo + 1 : hi])


def _positions(tokens: list[str], key: _Norm, canon: dict[str, str]) -> dict[str, int]:
    """Content word (normalised) -> its position; a word seen twice is left out (its order is ambiguous)."""
    seen: dict[str, int] = {}
    twice: set[str] = set()
    for i, t in enumerate(tokens):
        if is_content(t):
            w = canon.get(key(t), key(t))
            if w in seen:
                twice.add(w)
            seen[w] = i
    return {w: i for w, i in seen.items() if w not in twice}


def swapped(ta: list[str], tb: list[str], key: _Norm, canon: dict[str, str]) -> str:
    """Two words that changed order with no coordinator or punctuation between them, and either nothing that
    marks a moved phrase between them or the same words between them on both sides: swapped roles."""
    pos_a, pos_b = _positions(ta, key, canon), _positions(tb, key, canon)
    common = [w for w in pos_a if w in pos_b]
    joins, moves = SEPARATORS | COORDINATORS, SEPARATORS | COORDINATORS | PREPOSITIONS
    for k, x in enumerate(common):
        for y in common[k + 1 :]:
            (ax, ay), (bx, by) = (pos_a[x], pos_a[y]), (pos_b[x], pos_b[y])
            if (ax < ay) == (bx < by) or _marked(ta, ax, ay, joins) or _marked(tb, bx, by, joins):
                continue
            same_middle = ta[min(ax, ay) + 1 : max(ax, ay)] == tb[min(bx, by) + 1 : max(bx, by)]
            if same_middle or not (_marked(ta, ax, ay, moves) or _marked(tb, bx, by, moves)):
                return f"{x!r} and {y!r} swapped"
    return ""


def moved_number(ta: list[str], tb: list[str], key: _Norm) -> str:
    """A number that now counts another thing: "42 litres in gallons" / "litres in 42 gallons"."""

    def counted(tokens: list[str]) -> dict[str, str]:
        out = {}
        for i, t in enumerate(tokens):
            if t[0].isdigit():
                out[t] = key(next((u for u in tokens[i + 1 :] if u[0].isalpha() and u not in FUNCTION), ""))
        return out

    ca, cb = counted(ta), counted(tb)
    words_a, words_b = {key(t) for t in ta}, {key(t) for t in tb}
    for num in ca.keys() & cb.keys():
        x, y = ca[num], cb[num]
        if x and y and x != y and x in words_b and y in words_a:
            return f"{num} counts {x!r} / {y!r}"
    return ""


def _related(left: list[str], right: list[str], lex: Lexicon, kinds: set[str]) -> tuple[str, str] | None:
    return next(((x, y) for x in left for y in right if lex.relation(x, y) in kinds), None)


def _added(tokens: list[str], extra: set[str], shared: set[str], key: _Norm, lex: Lexicon) -> str:
    """Words on one side only that form a clause after the last shared word, or a modifier (not a verb)
    right before a shared word."""
    normed = [key(t) for t in tokens]
    last_shared = max((i for i, w in enumerate(normed) if w in shared), default=-1)
    first_extra = min((i for i, w in enumerate(normed) if w in extra), default=-1)
    if first_extra > last_shared >= 0:
        return "added at the end"
    for i in range(len(tokens) - 1):
        if normed[i] in extra and normed[i + 1] in shared and not lex.verb(tokens[i]):
            return "added modifier"
    return ""


def compare(query: str, cached: str, lex: Lexicon) -> Diff:
    key = _Norm(lex)
    ta, tb = words(query), words(cached)
    asks_a, asks_b = ASKING & set(ta), ASKING & set(tb)
    if asks_a and asks_b and not asks_a & asks_b:
        return Diff(refusal=f"asks {sorted(asks_a)} / {sorted(asks_b)}")
    ca, cb = Counter(key(w) for w in content(ta)), Counter(key(w) for w in content(tb))
    loose_a = [t for t in ta if t[0].isalpha() and (t not in FUNCTION or t in PARTICLES) and key(t) not in cb]
    loose_b = [t for t in tb if t[0].isalpha() and (t not in FUNCTION or t in PARTICLES) and key(t) not in ca]
    opposite = _related(loose_a, loose_b, lex, {"antonym"})
    if opposite:
        return Diff(refusal=f"opposites {opposite[0]!r} / {opposite[1]!r}")
    raw = {key(t): t for t in reversed(ta + tb) if t[0].isalnum()}  # a normalised word -> as written
    ea = [raw.get(w, w) for w in (ca - cb).elements()]
    eb = [raw.get(w, w) for w in (cb - ca).elements()]
    left, right, matched = pair_words(ea, eb, lex)
    sister = _related(left, right, lex, {"sister"})
    if sister:
        return Diff(refusal=f"another of its kind: {sister[0]!r} / {sister[1]!r}")
    canon = {key(y): key(x) for x, y, _ in matched}
    problem = swapped(ta, tb, key, canon) or moved_number(ta, tb, key)
    if problem:
        return Diff(refusal=problem)
    if bool(left) != bool(right):  # words added on one side only
        tokens, extra = (ta, left) if left else (tb, right)
        added = _added(tokens, {key(w) for w in extra}, set((ca & cb).keys()), key, lex)
        if added:
            return Diff(refusal=f"{added}: {sorted(extra)}")
    weak = tuple(f"{x}~{y}" for x, y, is_weak in matched if is_weak)
    return Diff(tuple(left), tuple(right), weak=weak)


_SEGMENT = re.compile(r"(?:[^.!?,:;()\s-]|\S-|-\S|\s(?!-\s))+(?:[.!?,:;()]+|\s-\s)?\s*|[.!?,:;()]+\s*")
_NOT_SOCIAL = ASKING | {"how", "what", "which", "not", "no", "never", "nor", "without"}


def _social(segment: str) -> bool:
    return all((t in SOCIAL or t in FUNCTION) and t not in _NOT_SOCIAL for t in words(segment) if t[0].isalnum())


def strip_social(text: str) -> str:
    """``text`` without greetings and thanks before or after the question ("Hi! ... Thanks a lot."), for the
    embedding: MiniLM moves a short question a long way for a polite frame. Unchanged when nothing else
    would be left."""
    segments = _SEGMENT.findall(text)
    lo, hi = 0, len(segments)
    while lo < hi and _social(segments[lo]):
        lo += 1
    while hi > lo and _social(segments[hi - 1]):
        hi -= 1
    core = strip_trailing("".join(segments[lo:hi]).strip())
    return core if core and (lo or hi < len(segments)) else text
