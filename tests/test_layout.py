"""The shape of the house: no import cycle among the project's own modules, counting every import the code can
execute (module level, inside functions, under ``TYPE_CHECKING``), in ``arnas_zoo/``, ``search/`` and ``export/``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("arnas_zoo", "search", "export")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> the project's modules it imports``, from the ast (every import statement anywhere)."""
    modules = _modules()

    def owner(name: str) -> str | None:  # the module a dotted name lives in (a module, or a name in one)
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                module = owner(target)
                if module is not None and module != name:
                    graph[name].add(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
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
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = import_graph()
    assert "arnas_zoo.atomic" in graph and "search.arnas.run" in graph and "export.cli" in graph
    assert "arnas_zoo.checkpoint" in graph["arnas_zoo.hub"]  # a module-level import is an edge
    assert "arnas_zoo.pretrained" in graph["arnas_zoo.sources"]  # so is one inside a function
    assert "export.card" in graph["export.cli"]  # and a relative one
    planted = {k: set(v) for k, v in graph.items()}
    planted["arnas_zoo.atomic"].add("arnas_zoo.checkpoint")
    assert any("arnas_zoo.atomic" in c and "arnas_zoo.checkpoint" in c for c in cycles(planted))


def test_no_import_cycle_among_the_projects_modules() -> None:
    assert cycles(import_graph()) == []


def test_atomic_writes_are_a_leaf() -> None:
    assert import_graph()["arnas_zoo.atomic"] == set()


SIZE_ROOTS = ("arnas_zoo", "search", "export", "runtime/arnas_zoo_runtime")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def _sources() -> list[Path]:
    return sorted(p for root in SIZE_ROOTS for p in (REPO / root).rglob("*.py"))


def test_no_source_module_over_500_lines_and_no_function_over_80() -> None:
    long_modules = [
        f"{p.relative_to(REPO)}: {n}" for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    long_functions = [
        f"{p.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}"
        for p in _sources()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long_modules == [] and long_functions == []
