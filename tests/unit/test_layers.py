"""The import graph points down only, and has no cycle (TYPE_CHECKING and function-level imports included).

    schemas  <-  bus  <-  policy  <-  weights, clients  <-  actors/<name>/  <-  cli

- ``schemas``: typed messages and config; imports nothing of the project.
- ``bus``: all JetStream / NATS I/O (subjects, pull loop, stream reader, KV, outcomes).
- ``policy``: pure decisions (pricing, memory model, eviction, routing, planner, scaling, leases, ledger fold,
  consensus); no bus, no I/O.
- ``weights``: model files (the GGUF library, the MiniLM embedding model); ``clients``: typed callers of
  other actors' services. Neither imports the other.
- ``actors/<name>/``: one actor each; an actor never imports another actor's package.
- ``cli``: the ``orchestra`` command; nothing imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RANK = {"schemas": 0, "bus": 1, "policy": 2, "weights": 3, "clients": 3, "actors": 4, "cli": 5}


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file, wherever it is written."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from pkg import module` is an edge to the module
                yield f"{target}.{alias.name}", node.lineno


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], tuple[Path, int]]]:
    modules: dict[str, Path] = {}
    for top in RANK:
        for path in (ROOT / top).rglob("*.py"):
            modules[_module_of(path)] = path
    edges: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], tuple[Path, int]] = {}
    for module, path in modules.items():
        for target, line in _imports(path, module):
            if target in modules and target != module:
                edges[module].add(target)
                where.setdefault((module, target), (path, line))
    return edges, where


def _allowed(src: str, dst: str) -> bool:
    a, b = src.split("."), dst.split(".")
    if a[0] == b[0]:
        if a[0] != "actors" or len(b) < 2:
            return True
        return len(a) >= 2 and a[1] == b[1]  # an actor imports its own package only
    if {a[0], b[0]} == {"weights", "clients"} or (a[0], b[0]) == ("policy", "bus"):
        return False  # siblings; and pure policy does no bus I/O
    return RANK[b[0]] < RANK[a[0]]


def test_every_import_points_down() -> None:
    edges, where = _graph()
    wrong = [
        f"{where[(src, dst)][0].relative_to(ROOT)}:{where[(src, dst)][1]}: {src} -> {dst}"
        for src, dsts in sorted(edges.items())
        for dst in sorted(dsts)
        if not _allowed(src, dst)
    ]
    assert wrong == [], "imports that point up or across:\n" + "\n".join(wrong)


def test_policy_does_no_io() -> None:
    """Pure policy: no NATS, no sockets, no subprocesses, no threads, no files opened by name."""
    forbidden = {"nats", "asyncio", "socket", "subprocess", "threading", "aiohttp", "httpx", "os", "shutil"}
    found = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for path in (ROOT / "policy").rglob("*.py")
        for target, line in _imports(path, _module_of(path))
        if target.split(".")[0] in forbidden
    ]
    assert found == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _without_packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its modules is not a cycle with them: drop edges into a package
    from its own members (``actors.router.flow -> actors.router`` when ``__init__`` is empty of imports)."""
    return {src: {dst for dst in dsts if not src.startswith(dst + ".")} for src, dsts in edges.items()}


def test_no_import_cycle() -> None:
    edges, _ = _graph()
    cycles = _cycles(_without_packages(edges))
    assert cycles == [], "import cycles (helpers that import their actor back):\n" + "\n".join(map(str, cycles))


def test_the_checker_sees_an_upward_edge_and_a_cycle() -> None:
    """The rules above are not vacuous: a made-up upward edge and a made-up cycle are caught."""
    assert not _allowed("bus.connect", "actors.router.actor")
    assert not _allowed("actors.router.actor", "actors.cache.core")
    assert not _allowed("policy.routing", "bus.subjects")
    assert not _allowed("weights.library", "clients.cache")
    assert _allowed("actors.router.actor", "policy.routing")
    assert _allowed("cli.ask", "actors.router.actor")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    edges, _ = _graph()
    assert "policy.routing" in edges["actors.router.actor"]
