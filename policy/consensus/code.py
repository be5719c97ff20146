"""Do two code answers do the same thing? Normalised ASTs, and behaviour on the request's examples.

    code_of(text) -> str | None              the Python in an answer (fenced blocks, or the whole text)
    normalised(code) -> str | None           ast.dump with docstrings, annotations and local names erased
    examples_of(prompt) -> [str]             expressions to run: ``>>> f(1)`` lines, ``assert f(1) == 2``
    compare_behaviour(a, b) -> (agree, reason) | None   two candidates' results on the same examples

Two answers with the same normalised AST agree whatever they call their variables. Behaviour is the
stronger test when the request carries examples (the sandbox runs them); a difference on any example
is a contradiction, and two candidates that both fail everything prove nothing (None).
"""

from __future__ import annotations

import ast
import builtins
import re

_BUILTINS = frozenset(dir(builtins))
# [ \t]* (not \s*, which crosses lines) and a greedy tail: linear on any prompt
_DOCTEST = re.compile(r"^[ \t]*>>>[ \t]?(.+)$", re.MULTILINE)
_ASSERT = re.compile(r"^[ \t]*assert[ \t]+(.+)$", re.MULTILINE)
MAX_EXAMPLES = 20
NOT_PYTHON = frozenset(
    "c cpp c++ java js javascript ts typescript go rust rs ruby rb php sh bash shell zsh console text txt "
    "json yaml yml toml html css sql xml markdown md diff kotlin swift scala r matlab".split()
)


def _tree(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _parses(code: str) -> bool:
    return _tree(code) is not None


def _fenced(text: str) -> list[str]:
    """Bodies of ``` fenced blocks not marked as another language, line by line (linear in the text)."""
    blocks: list[str] = []
    body: list[str] = []
    inside, python = False, False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("```"):
            if inside:
                body.append(line)
        elif inside:  # a closing fence
            if python:
                blocks.append("\n".join(body))
            inside, body = False, []
        else:  # an opening fence: ```python, ```py, ``` or another language
            inside = True
            python = stripped[3:].strip().split(" ")[0].lower() not in NOT_PYTHON
    return blocks


def code_of(text: str) -> str | None:
    """The Python in an answer: its fenced blocks (```python / ``` / ```py), else the whole text when it
    parses as Python and is not a single bare expression (plain prose can parse as a name: "Paris")."""
    blocks = _fenced(text)
    if blocks:
        code = "\n\n".join(b.strip("\n") for b in blocks)
        return code if _parses(code) else None
    stripped = text.strip()
    tree = _tree(stripped) if stripped else None
    if tree is None or (len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)):
        return None
    return stripped


class _Renamer(ast.NodeTransformer):
    """Names the code binds itself (functions, classes, parameters, variables) become n0, n1, ... in
    order of first appearance; builtins, imports and attributes keep theirs."""

    def __init__(self, bound: set[str]) -> None:
        self.bound = bound
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name not in self.bound:
            return name
        return self.names.setdefault(name, f"n{len(self.names)}")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self._new(node.name)
        node.returns = None
        return self._body(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        node.name = self._new(node.name)
        node.returns = None
        return self._body(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self._new(node.name)
        return self._body(node)

    def _body(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.AST:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._new(node.arg)
        node.annotation = None
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._new(node.id)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        target = self.visit(node.target)
        value = self.visit(node.value) if node.value is not None else ast.Constant(value=None)
        return ast.Assign(targets=[target], value=value, lineno=node.lineno)


def _bound(tree: ast.AST) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
    return bound - _BUILTINS


def normalised(code: str) -> str | None:
    """None when the code does not parse, or nests deeper than the walk can follow (RecursionError)."""
    try:
        tree = ast.parse(code)
        tree.body = [s for s in tree.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        tree = _Renamer(_bound(tree)).visit(tree)
        return ast.dump(tree, annotate_fields=False, include_attributes=False)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _callable_part(node: ast.expr) -> str | None:
    """The part of an example to evaluate: ``f(1)`` of ``f(1) == 2``, or the whole expression, if it calls."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq | ast.Is):
        node = node.left
    if not any(isinstance(n, ast.Call) for n in ast.walk(node)):
        return None
    return ast.unparse(node)


def _parse(source: str) -> ast.expr | None:
    try:
        stmt = ast.parse(source).body
    except SyntaxError:
        return None
    if len(stmt) != 1:
        return None
    if isinstance(stmt[0], ast.Assert):
        return stmt[0].test
    return stmt[0].value if isinstance(stmt[0], ast.Expr) else None


def examples_of(prompt: str) -> list[str]:
    """Calls to compare candidates on, from doctest lines and asserts in the request's prompt."""
    found: list[str] = []
    sources = [*_DOCTEST.findall(prompt), *(f"assert {a}" for a in _ASSERT.findall(prompt))]
    for source in sources:
        node = _parse(source.strip())
        expr = _callable_part(node) if node is not None else None
        if expr and expr not in found:
            found.append(expr)
    return found[:MAX_EXAMPLES]


def compare_behaviour(a: list[str], b: list[str], examples: list[str]) -> tuple[bool, str] | None:
    """``a`` / ``b``: each candidate's result per example ("ok:<repr>", "error:<Type>", "timeout", ...)."""
    if not examples or len(a) != len(examples) or len(b) != len(examples):
        return None
    if all(not r.startswith("ok:") for r in a) and all(not r.startswith("ok:") for r in b):
        return None
    for expr, ra, rb in zip(examples, a, b, strict=True):
        if ra != rb:
            return False, f"behaviour differs on {expr}: {ra[:60]} vs {rb[:60]}"
    return True, f"same behaviour on {len(examples)} example(s)"
