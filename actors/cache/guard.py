"""The meaning guard (pure): near-duplicate prompts that ask something else must not share an answer.

Sentence embeddings score "how do I enable X" and "how do I disable X" close, "convert 5 miles to km" and
"convert 5 km to miles" at 0.99, "why is my code not working" and "why is my code working" at 0.97: a
plain similarity threshold returns wrong answers (a known failure of GPTCache and of vLLM's semantic
router). ``check(query, cached)`` runs after the vector search and refuses a candidate when

    numbers       the numbers differ, or come in another order (digits and number words: "five" == "5")
    negation      one side negates more often ("not", "never", "n't", "without", ...)
    opposite      a word faces its opposite (enable/disable, encrypt/decrypt, install/uninstall, un-/dis-/in-...)
    code, quotes  code spans or quoted strings differ
    entities      names (capitalised mid-sentence, ALL-CAPS, with digits or symbols) or known domain terms
                  (languages, formats, units, currencies, systems, countries) differ or come in another order
    direction     a directional word takes another object ("to km" / "to miles", "than Java" / "than Go")
    permutation   the same content words in another order with the same function words (who did what to whom)
    one word      the only difference is one content word swapped for another (that word is the question),
                  unless the two are listed synonyms
    constraint    the only difference is content words added or dropped (an added constraint), fillers aside

It prefers a missed hit to a wrong answer. Inputs are :func:`actors.cache.normalize.clean` texts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|(?<![A-Za-z])'([^'\n]{1,200})'(?![A-Za-z])")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?(?:[._+#:/-]+[A-Za-z0-9]+)*[+#]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9", "dozen": "12", "half": "0.5",
    "twice": "x2", "double": "x2", "triple": "x3", "first": "#1", "second": "#2", "third": "#3", "fourth": "#4",
    "fifth": "#5", "sixth": "#6", "seventh": "#7", "eighth": "#8", "ninth": "#9", "tenth": "#10",
}  # fmt: skip
NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "without", "cannot"}
OPPOSITES = [
    ("enable", "disable"), ("encrypt", "decrypt"), ("increase", "decrease"), ("add", "remove"), ("add", "delete"),
    ("start", "stop"), ("open", "close"), ("show", "hide"), ("allow", "deny"), ("allow", "block"), ("accept", "reject"),
    ("import", "export"), ("upload", "download"), ("push", "pull"), ("input", "output"), ("min", "max"),
    ("minimum", "maximum"), ("minimize", "maximize"), ("ascending", "descending"), ("before", "after"),
    ("above", "below"), ("over", "under"), ("more", "less"), ("more", "fewer"), ("most", "least"),
    ("faster", "slower"), ("fastest", "slowest"), ("larger", "smaller"), ("largest", "smallest"),
    ("bigger", "smaller"), ("biggest", "smallest"), ("higher", "lower"), ("highest", "lowest"), ("longer", "shorter"),
    ("longest", "shortest"), ("better", "worse"), ("best", "worst"), ("true", "false"), ("yes", "no"), ("on", "off"),
    ("in", "out"), ("up", "down"), ("left", "right"), ("first", "last"), ("old", "new"), ("older", "newer"),
    ("oldest", "newest"), ("cheap", "expensive"), ("hot", "cold"), ("win", "lose"),
    ("buy", "sell"), ("send", "receive"), ("connect", "disconnect"), ("mount", "unmount"), ("lock", "unlock"),
    ("pros", "cons"), ("advantages", "disadvantages"), ("benefits", "drawbacks"), ("positive", "negative"),
    ("inner", "outer"), ("internal", "external"), ("public", "private"), ("client", "server"), ("read", "write"),
    ("get", "set"), ("include", "exclude"), ("compress", "decompress"), ("encode", "decode"), ("serialize",
    "deserialize"), ("synchronous", "asynchronous"), ("sync", "async"), ("success", "failure"), ("valid", "invalid"),
    ("legal", "illegal"), ("safe", "unsafe"), ("easy", "hard"), ("easiest", "hardest"), ("strong", "weak"),
    ("north", "south"), ("east", "west"), ("male", "female"), ("day", "night"), ("morning", "evening"),
    ("uppercase", "lowercase"), ("upper", "lower"), ("horizontal", "vertical"), ("rows", "columns"),
    ("row", "column"), ("union", "intersection"), ("prefix", "suffix"), ("head", "tail"), ("front", "back"),
    ("top", "bottom"), ("begin", "end"), ("beginning", "end"), ("install", "uninstall"),
    ("grant", "revoke"), ("grant", "deny"), ("approve", "reject"), ("approve", "deny"), ("promote", "demote"),
    ("succeed", "fail"), ("pass", "fail"), ("merge", "split"), ("attach", "detach"), ("insert", "delete"),
    ("create", "delete"), ("create", "destroy"), ("increase", "reduce"), ("raise", "lower"), ("expand", "collapse"),
    ("borrow", "lend"), ("ascend", "descend"), ("arrive", "depart"), ("arrival", "departure"), ("freeze", "thaw"),
    ("heat", "cool"), ("heating", "cooling"), ("gain", "loss"), ("profit", "loss"), ("credit", "debit"),
    ("deposit", "withdraw"), ("include", "omit"), ("login", "logout"),
]  # fmt: skip
NEGATING_PREFIXES = ("un", "dis", "de", "in", "im", "il", "ir", "non", "anti", "mis")
DOMAIN_TERMS = set(
    """
    python java javascript typescript golang rust c++ c# cpp csharp ruby php swift kotlin scala haskell bash
    shell powershell sql r perl lua julia matlab dart elixir erlang clojure fortran cobol assembly zig ocaml f#
    english french spanish german italian portuguese chinese mandarin japanese korean russian arabic hindi dutch
    swedish norwegian danish finnish polish turkish greek hebrew latin ukrainian vietnamese thai indonesian
    json yaml yml xml csv toml markdown html css pdf excel latex ini protobuf
    meters metres meter metre feet foot miles mile kilometers kilometres km kilograms kg pounds lbs lb grams
    ounces oz celsius fahrenheit kelvin inches inch cm mm centimeters millimeters liters litres gallons ml
    seconds minutes hours days weeks months years mph kph bytes kb mb gb tb kib mib gib
    usd eur gbp jpy cny inr chf cad aud dollars dollar euros euro yen pounds rupees bitcoin btc eth
    windows linux macos mac osx ios android ubuntu debian fedora centos freebsd
    postgres postgresql mysql sqlite mongodb redis kafka nats docker kubernetes k8s aws gcp azure react vue angular
    django flask fastapi numpy pandas pytorch tensorflow spark hadoop nginx apache git svn mercurial
    france germany spain italy portugal china japan korea russia india brazil mexico canada australia austria
    england britain uk usa america ireland scotland wales netherlands belgium sweden norway denmark finland
    poland switzerland greece turkey egypt nigeria kenya argentina chile peru colombia indonesia vietnam
    thailand pakistan iran iraq israel ukraine
    paris london berlin madrid rome lisbon beijing tokyo seoul moscow delhi mumbai cairo sydney toronto
    vienna amsterdam brussels stockholm oslo copenhagen helsinki warsaw prague athens dublin zurich
    monday tuesday wednesday thursday friday saturday sunday january february april june july august
    september october november december summer autumn winter
    """.split()
)
SYNONYMS = [
    ("fix", "repair"), ("fastest", "quickest"), ("fast", "quick"), ("big", "large"), ("small", "little"),
    ("start", "begin"), ("car", "automobile"), ("picture", "image"), ("photo", "picture"), ("simple", "easy"),
    ("make", "create"), ("use", "utilize"), ("obtain", "get"), ("display", "show"), ("remove", "delete"),
    ("explain", "describe"), ("error", "bug"), ("doctor", "physician"), ("buy", "purchase"), ("help", "assist"),
    ("tell", "explain"), ("mean", "meaning"), ("definition", "meaning"), ("difference", "differences"),
    ("program", "code"), ("script", "program"),
]  # fmt: skip
STOPWORDS = set(
    """
    a an the this that these those it its it's i me my mine we us our you your yours he him his she her they them
    their is are was were be been being am do does did doing done have has had having will would shall should can
    could may might must of in on at for with by about as and or but if then so such there here some any each
    every all both either which what who whom whose when where why how whether please kindly tell show give let
    know want need like explain describe just also very really actually exactly simply basically quite possible
    way ways best good proper correct right method thing things something someone anyone hi hello hey thanks thank
    few several mean meaning reason
    okay ok i'm i've i'd i'll you're what's how's it's that's there's let's who's where's
    to from into onto than vs versus over before after toward towards per via through between within
    """.split()
)  # fmt: skip
DIRECTIONAL = {"to", "into", "onto", "from", "than", "vs", "versus", "over", "before", "after", "toward", "towards"}
FILLERS = STOPWORDS  # words that may come and go without changing the question

_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in OPPOSITES:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)
_SYNONYM = {frozenset(p) for p in SYNONYMS}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


OK = Verdict(True)


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


@dataclass(frozen=True)
class _Parsed:
    code: list[str]
    quoted: list[str]
    words: list[str]  # lower-case tokens of the prose, in order
    named: set[str]  # lower-case tokens that look like names in the original
    numbers: list[str]  # in order: "divide 10 by 2" is not "divide 2 by 10"
    negations: int


def _parse(text: str) -> _Parsed:
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
        if looks_named and len(raw) > 1 and word not in STOPWORDS:
            named.add(word)
        if raw.isdigit():
            pass  # numbers are compared on their own
        elif any(c.isdigit() for c in raw) or any(c in "._+#:/" for c in raw.strip("+#")) or raw.endswith(("+", "#")):
            named.add(word)
        if word.endswith("n't") or word in NEGATIONS:
            negations += 1
            continue
        if word in NUMBER_WORDS:
            numbers.append(NUMBER_WORDS[word])
        else:
            numbers.extend(_NUMBER.findall(raw))
        words.append(word)
    return _Parsed(code, quoted, words, named, numbers, negations)


def _content(words: list[str]) -> list[str]:
    return [stem(w) for w in words if w not in STOPWORDS and w not in NUMBER_WORDS and not w.isdigit()]


def _opposite(a: set[str], b: set[str]) -> tuple[str, str] | None:
    only_a, only_b = a - b, b - a
    for w in only_a:
        for o in _OPPOSITE.get(w, ()):
            if o in only_b:
                return w, o
    for x, y in ((only_a, only_b), (only_b, only_a)):
        for w in x:
            for prefix in NEGATING_PREFIXES:
                if w.startswith(prefix) and len(w) - len(prefix) >= 4 and w[len(prefix) :] in y:
                    return w, w[len(prefix) :]
    return None


def _objects(words: list[str]) -> dict[str, list[tuple[str, ...]]]:
    """Each directional word with its object: the content words that follow it, up to the next function word
    ("from Python 2 to Python 3" -> from: (python, 2), to: (python, 3))."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for i, w in enumerate(words):
        if w not in DIRECTIONAL:
            continue
        rest = words[i + 1 :]
        start = next((k for k, x in enumerate(rest) if x not in STOPWORDS), None)
        if start is None:
            continue
        obj = []
        for x in rest[start : start + 3]:
            if x in STOPWORDS:
                break
            obj.append(stem(x))
        out.setdefault(w, []).append(tuple(obj))
    return out


def check(query: str, cached: str) -> Verdict:
    """Whether ``cached``'s answer also answers ``query`` as far as surface meaning goes."""
    a, b = _parse(query), _parse(cached)
    if a.code != b.code:
        return Verdict(False, "code differs")
    if a.quoted != b.quoted:
        return Verdict(False, "quoted text differs")
    if a.numbers != b.numbers:
        return Verdict(False, f"numbers differ: {a.numbers} vs {b.numbers}")
    if a.negations != b.negations:
        return Verdict(False, "negation differs")
    wa, wb = set(a.words), set(b.words)
    pair = _opposite(wa, wb)
    if pair:
        return Verdict(False, f"opposite words: {pair[0]!r} / {pair[1]!r}")
    names = a.named | b.named | ((wa | wb) & DOMAIN_TERMS)
    seq_a, seq_b = [w for w in a.words if w in names], [w for w in b.words if w in names]
    if seq_a != seq_b:
        return Verdict(False, f"names differ: {seq_a} vs {seq_b}")
    obj_a, obj_b = _objects(a.words), _objects(b.words)
    for prep in obj_a.keys() & obj_b.keys():
        if obj_a[prep] != obj_b[prep]:
            return Verdict(False, f"direction differs: {prep} {obj_a[prep]} vs {obj_b[prep]}")
    ca, cb = _content(a.words), _content(b.words)
    if ca == cb:
        return OK
    function_a = Counter(w for w in a.words if w in STOPWORDS)
    function_b = Counter(w for w in b.words if w in STOPWORDS)
    if Counter(ca) == Counter(cb):
        return Verdict(False, "same words in another order") if function_a == function_b else OK
    ops = [op for op in SequenceMatcher(None, ca, cb, autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(ops) == 1 and ops[0][0] == "replace" and ops[0][2] - ops[0][1] == 1 and ops[0][4] - ops[0][3] == 1:
        x, y = ca[ops[0][1]], cb[ops[0][3]]
        if frozenset((x, y)) not in _SYNONYM and frozenset((_word(a, x), _word(b, y))) not in _SYNONYM:
            return Verdict(False, f"one word differs: {x!r} vs {y!r}")
    if all(op[0] in ("insert", "delete") for op in ops):
        added = [w for op in ops for w in (ca[op[1] : op[2]] + cb[op[3] : op[4]]) if w not in FILLERS]
        if added:
            return Verdict(False, f"constraint added or dropped: {added}")
    return OK


def _word(p: _Parsed, stemmed: str) -> str:
    """The first original word with this stem (synonyms are listed unstemmed)."""
    return next((w for w in p.words if stem(w) == stemmed), stemmed)
