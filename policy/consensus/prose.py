"""Do two prose answers say the same thing? Explainable contradiction checks first, then similarity.

    contradiction(a, b) -> str | None     the reason two answers contradict ("yes/no flip: yes vs no"), or None
    settled(a, b) -> str | None           the reason two answers plainly agree (same final number, ...), or None
    echoes(answer, prompt) -> bool        the answer only repeats the prompt (it gets no vote)
    lexical_similarity(a, b) -> float     word overlap, 0..1: the fallback when no embedding is at hand

Embeddings put "Paris" and "not Paris", or "The capital is Paris" and "The capital is Lyon", close
together; these checks catch exactly those cases and say why. They are deliberately narrow (a check
that fires wrongly splits two agreeing answers): a negated word that the other answer asserts, a
different final number, a yes/no (true/false) flip, a different named entity in two short answers.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[+-]?\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
# bounded gaps ({0,3}): an answer full of spaces cannot make the alternatives backtrack for long
_FINAL_NUMBER = re.compile(
    r"(?:answer|result|total|sum|equals|is|are|=|:)\s{0,3}(?:(?:is|was|would be|of|equals|=|:)\s{0,3})?"
    r"(?:(?:about|approximately|roughly)\s{0,3})?\$?([-+]?\d+(?:,\d{3})*(?:\.\d+)?)"
)
_ENTITY = re.compile(r"(?<=[a-z,;:] )([A-Z][a-zA-Z0-9]+)|^([A-Z][a-zA-Z0-9]+)$")
NEGATORS = frozenset({"not", "no", "never", "none", "neither", "nor", "cannot", "without"})
_NT = re.compile(r"n't\b")
STOP = frozenset(
    "a an the is are was were be been being it its this that these those of in on at to for by with as and or "
    "but so only do does did has have had i you we they he she there here than then which who what answer "
    "would will can could should may might must also just very really quite".split()
)
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {w: str(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), start=3)}
YES = frozenset({"yes", "true", "correct", "yeah", "yep", "right"})
NO = frozenset({"no", "false", "incorrect", "nope", "wrong"})
SHORT = 25  # content words: an answer this short is compared entity by entity
SLOT = 3  # content words: two answers this short that differ in one word each give different answers


def words(text: str) -> list[str]:
    lowered = _NT.sub(" not", text.lower().replace("\u2019", "'"))
    return [NUMBER_WORDS.get(w, w) for w in (w.removesuffix("'s") for w in _WORD.findall(lowered))]


def stem(word: str) -> str:
    """A plural or third-person "s" off ("guarantees" -> "guarantee"): enough to match a negated verb."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-2] if word.endswith(("ches", "shes", "xes", "sses")) else word[:-1]
    return word


def content(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP and w not in NEGATORS}


def _negated_and_asserted(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Content words right after a negator (its scope, up to the next content word) and all the others,
    each by its stem (to the word as written)."""
    negated: dict[str, str] = {}
    asserted: dict[str, str] = {}
    pending = False
    ws = words(text)
    if polarity(text):
        ws = ws[1:]  # "No, ..." answers the question: polarity() compares it, it negates nothing here
    for w in ws:
        if w in NEGATORS:
            pending = True
        elif w in STOP:
            continue
        elif pending:
            negated[stem(w)] = w
            pending = False
        else:
            asserted[stem(w)] = w
    return negated, asserted


def _number(raw: str) -> float | None:
    try:
        return float(raw.replace(",", ""))
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The answer's number: after "answer is" / "=" / ":" when it says so, else the last number it gives."""
    spelled = " ".join(NUMBER_WORDS.get(w.lower().strip(".,;:!?"), w) for w in text.split())
    marked = _FINAL_NUMBER.findall(spelled.lower())
    if marked:
        return _number(marked[-1])
    found = _NUMBER.findall(spelled)
    return _number(found[-1]) if found else None


def _same_number(x: float, y: float) -> bool:
    """Equal, or one is the other rounded to the digits it shows (3.14 and 3.14159)."""
    if x == y:
        return True
    for a, b in ((x, y), (y, x)):
        text = repr(a)
        places = len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0
        if places and round(b, places) == a:
            return True
    return False


def polarity(text: str) -> str | None:
    """ "yes" / "no" when the answer opens with one ("Yes, ...", "False.", "No")."""
    ws = words(text)
    if ws and ws[0] in YES:
        return "yes"
    if ws and ws[0] in NO:
        return "no"
    return None


def _entities(text: str) -> set[str]:
    found = {(m[0] or m[1]).lower() for m in _ENTITY.findall(text)}
    if len(content(text)) <= 2:  # a bare short answer ("Paris", "it's Lyon"): its content words are the entities
        found |= content(text)
    return found - STOP - NEGATORS - set(NUMBER_WORDS.values())


def contradiction(a: str, b: str) -> str | None:
    pa, pb = polarity(a), polarity(b)
    if pa and pb and pa != pb:
        return f"yes/no flip: {pa} vs {pb}"
    na, xa = _negated_and_asserted(a)
    nb, xb = _negated_and_asserted(b)
    ca, cb = content(a), content(b)
    clash = sorted((na.keys() & xb.keys()) | (nb.keys() & xa.keys()))
    if clash and len(ca) <= 2 * SHORT and len(cb) <= 2 * SHORT:  # in long answers a scope guess is too loose
        word = na.get(clash[0]) or nb[clash[0]]
        return f"negation: {word!r} is denied by one answer and asserted by the other"
    fa, fb = final_number(a), final_number(b)
    if fa is not None and fb is not None and not _same_number(fa, fb):
        return f"different numbers: {fa:g} vs {fb:g}"
    if len(ca) <= SHORT and len(cb) <= SHORT:
        ea, eb = _entities(a) - cb, _entities(b) - ca
        if ea and eb:
            return f"different answers: {sorted(ea)[0]!r} vs {sorted(eb)[0]!r}"
    if ca & cb and len(ca) <= SLOT and len(cb) <= SLOT and len(ca - cb) == 1 and len(cb - ca) == 1:
        return f"different answers: {next(iter(ca - cb))!r} vs {next(iter(cb - ca))!r}"  # the sky is blue / green
    return None


def settled(a: str, b: str) -> str | None:
    """Plain agreement that needs no embedding (asked only when no contradiction was found)."""
    fa, fb = final_number(a), final_number(b)
    if fa is not None and fb is not None:
        return f"same number: {fa:g}"
    pa, pb = polarity(a), polarity(b)
    if pa and pa == pb:
        return f"same yes/no: {pa}"
    ca, cb = content(a), content(b)
    small, large = (ca, cb) if len(ca) <= len(cb) else (cb, ca)
    if small and len(small) <= 4 and small <= large:
        return f"short answer contained in the other: {' '.join(sorted(small))}"
    return None


def echoes(answer: str, prompt: str) -> bool:
    """The answer repeats the prompt word for word and adds nothing ("What is 2+2? Answer with a number."
    given back by a small model): no answer at all, whatever probability the model gave its tokens."""
    pw, aw = words(prompt), words(answer)
    if not pw or len(aw) < len(pw) or not content(answer) <= content(prompt):
        return False
    joined, needle = " " + " ".join(aw) + " ", " " + " ".join(pw) + " "
    return needle in joined


def lexical_similarity(a: str, b: str) -> float:
    """Mean of Jaccard and containment over content words (the router's former measure)."""
    ta, tb = content(a), content(b)
    if not ta and not tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    inter = len(ta & tb)
    return 0.5 * inter / len(ta | tb) + 0.5 * inter / min(len(ta), len(tb))
