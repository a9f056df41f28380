"""Import contracts: the core never pulls in Qt, and the CLI starts without torch."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "clipdesk.cli.main",
    "clipdesk.services",
    "clipdesk.library.scanning",
    "clipdesk.indexing.embedding",
    "clipdesk.search.vector_index",
    "clipdesk.spec",
    "clipdesk.models.encoder",
    "clipdesk.backends.onnx_export",
    "clipdesk.imaging",
    "clipdesk.library",
    "clipdesk.library.db",
    "clipdesk.library.browsing",
    "clipdesk.library.thumbnails",
    "clipdesk.tagging.zero_shot",
    "clipdesk.models.store",
    "clipdesk.models.exported",
    "clipdesk.models.export",
    "clipdesk.search.compact",
    "clipdesk.models.tokenizer",
    "clipdesk.cli.selftest",
    "clipdesk.models.aside",
]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + ("print('\\n'.join(sys.modules))")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_imports_no_qt_and_no_heavy_libraries() -> None:
    loaded = _loaded_after_import(CORE)
    for heavy in ("PySide6", "PyQt6", "torch", "open_clip", "hnswlib"):
        assert heavy not in loaded, f"importing the core pulled in {heavy}"


def test_only_the_gui_package_imports_qt() -> None:
    import re
    from pathlib import Path

    import clipdesk

    qt_import = re.compile(r"^\s*(from|import)\s+(PySide6|PyQt|shiboken)", re.MULTILINE)
    package = Path(clipdesk.__file__).parent
    for source in package.rglob("*.py"):
        inside_gui = source.relative_to(package).parts[0] == "gui"
        if not inside_gui:
            assert not qt_import.search(source.read_text(encoding="utf-8")), source
