"""Subjects are spelled in one place: bus/subjects.py. No other production module writes a subject
literal (a string that begins ``orch.``, or an f-string that begins with ``subjects.PREFIX``); it
uses the constants, builders and parsers of bus/subjects.py instead. Docstrings may show subjects.

ALLOWED lists the modules still to convert (packages that were being reshaped when the rule came):
it may only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "bus", "policy", "weights", "clients", "actors", "cli")
HOME = "bus/subjects.py"
ALLOWED: set[str] = set()


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _is_prefix(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "PREFIX") or (
        isinstance(node, ast.Attribute) and node.attr == "PREFIX"
    )


def _literals(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value.startswith("orch."):
                yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.FormattedValue) and _is_prefix(first.value):
                yield node.lineno, ast.unparse(node)
            elif isinstance(first, ast.Constant) and str(first.value).startswith("orch."):
                yield node.lineno, ast.unparse(node)


def _offences() -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            hits = [] if rel == HOME else list(_literals(path))
            if hits:
                found[rel] = hits
    return found


def test_no_production_module_spells_a_subject_outside_bus_subjects() -> None:
    """Every subject literal outside bus/subjects.py is in a module still listed in ALLOWED."""
    offences = {rel: hits for rel, hits in _offences().items() if rel not in ALLOWED}
    assert offences == {}


def test_the_allow_list_only_names_modules_that_still_need_it() -> None:
    """A converted module leaves ALLOWED (the list may only shrink)."""
    assert sorted(ALLOWED - set(_offences())) == []


def test_the_check_sees_plain_and_formatted_subject_literals(tmp_path: Path) -> None:
    """Both spellings are caught, a docstring and prose that mentions a subject are not."""
    sample = tmp_path / "m.py"
    sample.write_text(
        '"""orch.result.<id> in a docstring."""\n'
        'A = "orch.cmd.router.>"\n'
        'B = f"{subjects.PREFIX}.event.{kind}"\n'
        'C = "see orch.result.> in the audit"\n'
    )
    assert [line for line, _ in _literals(sample)] == [2, 3]
