"""The backends room (clipdesk/backends/) knows a model only by its spec: it imports nothing of
clipdesk but itself, the spec and the foundations, counting imports inside functions and under
TYPE_CHECKING too. Inside functions it imports only what is slow to import (torch, open_clip,
OpenVINO, and the towers that import them), each with a comment that says so."""

from __future__ import annotations

import ast
from pathlib import Path

import clipdesk.backends

ROOM = Path(clipdesk.backends.__file__).parent
ALLOWED = {"clipdesk.spec", "clipdesk.errors", "clipdesk.progress", "clipdesk.throttle"}
ALLOWED |= {"clipdesk.files"}
HEAVY = ("torch", "open_clip", "openvino", "onnx", "clipdesk.backends.towers")


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if base == "clipdesk" or base == "clipdesk.backends":  # from clipdesk.backends import x
        return [f"{base}.{alias.name}" for alias in node.names]
    return [base]


def _modules() -> list[Path]:
    return sorted(ROOM.glob("*.py"))


def test_the_backends_import_only_the_spec_and_the_foundations_of_clipdesk() -> None:
    outside = []
    for source in _modules():
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(node):
                    if name.startswith("clipdesk.backends.") or not name.startswith("clipdesk"):
                        continue
                    if name not in ALLOWED:
                        outside.append(f"{source.name}:{node.lineno} {name}")
    assert outside == []


def _says_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line or the line above; or the import above it (one group
    of imports) says why."""
    line, above = lines[lineno - 1], lines[lineno - 2].strip()
    if "#" in line or above.startswith("#"):
        return True
    return above.startswith(("import ", "from ")) and _says_why(lines, lineno - 1)


def test_imports_inside_functions_are_heavy_ones_and_say_why() -> None:
    found = []
    for source in _modules():
        lines = source.read_text(encoding="utf-8").splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = _imported(node)
                    heavy = all(n in HEAVY or n.split(".")[0] in HEAVY for n in names)
                    if not heavy or not _says_why(lines, node.lineno):
                        found.append(f"{source.name}:{node.lineno} {names}")
    assert found == []
