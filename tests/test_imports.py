"""The package's modules import each other without circles (issue 23, part 5).

Every import of a ``lightning_epe`` module counts: at the top of a file, inside a function (a lazy
import hides a circle, it does not break it) and under ``if TYPE_CHECKING``. ``from .x import y``
counts as an import of ``x`` (and of ``x.y`` when that is a module).
"""
from __future__ import annotations

import ast
from pathlib import Path

import lightning_epe

PACKAGE = Path(lightning_epe.__file__).parent


def _module_name(path: Path) -> tuple[str, str]:
    """(module, the package its relative imports start from)."""
    parts = ("lightning_epe", *path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        name = ".".join(parts[:-1])
        return name, name
    return ".".join(parts), ".".join(parts[:-1])


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name, package = _module_name(path)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                imported |= {target, *(f"{target}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        modules[name] = imported
    return {name: {m for m in imported if m in modules and m != name} for name, imported in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_of_every_kind():
    graph = import_graph()
    assert "lightning_epe.scores.ranking" in graph["lightning_epe.scores.az_nas"]  # top of the file
    assert "lightning_epe.module" in graph["lightning_epe.search.search"]  # inside ArchitectureSearch.fit
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_rank_aggregation_is_importable_where_it_was():
    from lightning_epe.scores import ensemble, ranking

    for name in ("rank_aggregate", "average_ranks", "rank_ensemble", "DEFAULT_MEMBERS"):
        assert getattr(ensemble, name) is getattr(ranking, name)
