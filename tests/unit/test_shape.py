"""The shape of the production code (issue 21): small modules, short functions, one entry point per actor.

- no module over MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES lines (its ``def`` line to
  its last line, docstring included) in schemas, bus, policy, weights, clients, actors, cli;
- every actor class in ``actors/<name>/actor.py`` defines ``handle`` (its one entry point, a ``match`` over
  its own message union);
- no ``hasattr(self, ...)`` in actors/: every attribute exists from ``__init__``.

The KNOWN lists are empty: an exception added there must say why (they may only shrink again)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "bus", "policy", "weights", "clients", "actors", "cli")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

KNOWN_LONG_MODULES: dict[str, int] = {}
KNOWN_LONG_FUNCTIONS: dict[str, int] = {}
KNOWN_WITHOUT_HANDLE: set[str] = set()
KNOWN_HASATTR_SELF: set[str] = set()


def _sources() -> Iterator[tuple[str, str]]:
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) for every function, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def long_modules(sources: Iterator[tuple[str, str]]) -> dict[str, int]:
    return {rel: n for rel, text in sources if (n := len(text.splitlines())) > MAX_MODULE_LINES}


def long_functions(sources: Iterator[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rel, text in sources:
        for name, node in _functions(ast.parse(text, rel)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out[f"{rel}::{name}"] = length
    return out


def actors_without_handle(sources: Iterator[tuple[str, str]]) -> set[str]:
    out: set[str] = set()
    for rel, text in sources:
        parts = rel.split("/")
        if len(parts) != 3 or parts[0] != "actors" or parts[2] != "actor.py":
            continue
        for node in ast.parse(text, rel).body:
            if isinstance(node, ast.ClassDef) and any(_name(b) == "Actor" for b in node.bases):
                methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
                if "handle" not in methods or not _one_match(methods["handle"]):
                    out.add(f"{rel}::{node.name}")
    return out


def _one_match(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """The body is one ``match`` (after an optional docstring; a service's reply may be returned after it)."""
    body = [b for b in fn.body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))]
    return bool(body) and isinstance(body[0], ast.Match) and all(isinstance(b, ast.Return) for b in body[1:])


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def hasattr_self(sources: Iterator[tuple[str, str]]) -> set[str]:
    out: set[str] = set()
    for rel, text in sources:
        if not rel.startswith("actors/"):
            continue
        for node in ast.walk(ast.parse(text, rel)):
            if (
                isinstance(node, ast.Call)
                and _name(node.func) == "hasattr"
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == "self"
            ):
                out.add(rel)
    return out


def _check(found: set[str], known: set[str], what: str) -> None:
    new, fixed = sorted(found - known), sorted(known - found)
    assert not new, f"{what}:\n" + "\n".join(new)
    assert not fixed, f"fixed, so delete from the KNOWN list in {Path(__file__).name} (it may only shrink):\n" + (
        "\n".join(fixed)
    )


def test_no_module_is_over_400_lines() -> None:
    found = long_modules(_sources())
    _check(set(found), set(KNOWN_LONG_MODULES), f"modules over {MAX_MODULE_LINES} lines: split them along meaning")


def test_no_function_is_over_60_lines() -> None:
    found = long_functions(_sources())
    _check(set(found), set(KNOWN_LONG_FUNCTIONS), f"functions over {MAX_FUNCTION_LINES} lines")


def test_every_actor_has_one_handle() -> None:
    _check(actors_without_handle(_sources()), KNOWN_WITHOUT_HANDLE, "actor classes without `handle`")


def test_no_actor_probes_its_own_attributes() -> None:
    _check(hasattr_self(_sources()), KNOWN_HASATTR_SELF, "hasattr(self, ...) in actors/ (assign in __init__)")


def test_the_checks_see_what_they_look_for() -> None:
    """The rules are not vacuous: a made-up long module, long method, actor without handle and
    hasattr(self) are each caught."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    method = f"class A:\n    def f(self):\n{body.replace('    ', '        ')}\n"
    assert long_functions(iter([("bus/a.py", method)])) == {"bus/a.py::A.f": MAX_FUNCTION_LINES + 1}
    assert long_modules(iter([("bus/a.py", "x = 1\n" * (MAX_MODULE_LINES + 1))])) == {"bus/a.py": 401}
    actor = "class Foo(Actor):\n    async def on_start(self):\n        if hasattr(self, 'x'):\n            pass\n"
    assert actors_without_handle(iter([("actors/foo/actor.py", actor)])) == {"actors/foo/actor.py::Foo"}
    assert hasattr_self(iter([("actors/foo/actor.py", actor)])) == {"actors/foo/actor.py"}
    branching = "class Foo(Actor):\n    async def handle(self, msg):\n        if msg:\n            return 1\n"
    assert actors_without_handle(iter([("actors/foo/actor.py", branching)])) == {"actors/foo/actor.py::Foo"}
    matching = (
        "class Foo(Actor):\n    async def handle(self, msg):\n        '''doc'''\n        match msg:\n"
        "            case _:\n                pass\n        return None\n"
    )
    assert actors_without_handle(iter([("actors/foo/actor.py", matching)])) == set()
