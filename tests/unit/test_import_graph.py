"""The import graph of the clipdesk package, read from the source (no module is imported):
no circle among the modules' top-level imports, and Qt only in clipdesk/gui.

Top-level: what runs when a module is imported (class bodies and module-level ``if`` and
``try`` included); imports inside functions and under ``if TYPE_CHECKING:`` run later or
never, so they cannot make a circle at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import clipdesk

PACKAGE = Path(clipdesk.__file__).parent
QT = ("PySide6", "PyQt5", "PyQt6", "shiboken6")


def _module_name(root: Path, source: Path) -> str:
    parts = list(source.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(root, source): source for source in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level_imports(block)
            for handler in node.handlers:
                yield from _top_level_imports(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _top_level_imports(node.body)


def _all_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that may run, in functions too (not those under TYPE_CHECKING)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _all_imports(other)
        else:
            yield from _all_imports(child)


def _imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The modules an import statement names (a ``from M import x`` names M, and M.x where
    that may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = importer.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path, in_functions: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of ``root``'s package it imports at its top level (and with
    ``in_functions``, anywhere but under TYPE_CHECKING)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, source in modules.items():
        tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
        is_package = source.name == "__init__.py"
        edges: set[str] = set()
        found = _all_imports(tree) if in_functions else _top_level_imports(tree.body)
        for node in found:
            for target in _imported(node, name, is_package):
                # importing a.b.c runs a, a.b and a.b.c; a package this module is inside of
                # is being imported already (that is how Python finds this module)
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    inside = name == prefix or name.startswith(prefix + ".")
                    if prefix in modules and not inside:
                        edges.add(prefix)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph``: its strongly connected components of more than one module
    (or of one that imports itself), each sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
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
                    if len(component) > 1 or node in graph.get(node, ()):
                        found.append(sorted(component))
    return found


def test_no_circle_among_clipdesk_modules() -> None:
    graph = import_graph(PACKAGE)
    assert (
        "clipdesk.models.encoder" in graph and "clipdesk.spec" in graph["clipdesk.models.encoder"]
    )
    assert cycles(graph) == [], "modules that import each other (at their top level)"


def test_the_model_modules_import_only_downward_even_in_functions() -> None:
    """Issue 18: encoder, backends, exported and models imported each other in a circle,
    held open by imports inside functions. Now spec (what a model is) needs nothing of
    them, backends (how an image tower runs) nothing but the spec, and, counting imports
    in functions too, the model modules form no circle."""
    everywhere = import_graph(PACKAGE, in_functions=True)
    model = {
        "clipdesk.spec",
        "clipdesk.backends.choice",
        "clipdesk.backends.onnx_export",
        "clipdesk.models.store",
        "clipdesk.models.exported",
        "clipdesk.models.encoder",
        "clipdesk.models.export",
        "clipdesk.models.aside",
        "clipdesk.backends.towers",
        "clipdesk.models.tokenizer",
    }
    assert everywhere["clipdesk.spec"] <= {"clipdesk.errors"}
    assert everywhere["clipdesk.backends.choice"] & model <= {
        "clipdesk.spec",
        "clipdesk.backends.towers",
    }
    among = {name: everywhere[name] & model for name in model}
    assert cycles(among) == []


def test_the_cycle_finder_finds_a_circle(tmp_path: Path) -> None:
    """The check above would pass on any graph if it found nothing: a circle it must find,
    held by a top-level import in a class body, and one it must not (a function's import,
    and one under TYPE_CHECKING)."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg import b\n")
    (root / "b.py").write_text("class B:\n    from pkg.c import thing\n")
    (root / "c.py").write_text("from . import a\n")
    (root / "d.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import e\n"
        "def f() -> None:\n    from pkg import e\n"
    )
    (root / "e.py").write_text("import pkg.d\n")
    graph = import_graph(root)
    assert graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert import_graph(root, in_functions=True)["pkg.d"] == {"pkg.e"}
    assert ["pkg.d", "pkg.e"] in cycles(import_graph(root, in_functions=True))


def test_only_clipdesk_gui_imports_qt_anywhere() -> None:
    """Anywhere: in functions and under TYPE_CHECKING too."""
    offenders = []
    for name, source in _modules(PACKAGE).items():
        if name == "clipdesk.gui" or name.startswith("clipdesk.gui."):
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] in QT for n in names):
                offenders.append(f"{source.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []
