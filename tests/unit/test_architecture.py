"""Import contracts: the core never pulls in Qt, and the CLI starts without torch."""

from __future__ import annotations

import subprocess
import sys

# torch modules by nature (subclasses of torch.nn.Module): imported only inside the functions
# that run a model, which the contracts in pyproject.toml and this test keep that way.
TORCH_BY_NATURE = {"clipdesk.backends.towers"}


def _core_modules() -> list[str]:
    """Every module of the package but the window's, ``python -m clipdesk``'s and those
    that are torch by nature."""
    import pkgutil

    import clipdesk

    return [
        info.name
        for info in pkgutil.walk_packages(clipdesk.__path__, "clipdesk.")
        if not info.name.startswith("clipdesk.gui")
        and info.name != "clipdesk.__main__"
        and info.name not in TORCH_BY_NATURE
    ]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + ("print('\\n'.join(sys.modules))")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_core_imports_no_qt_and_no_heavy_libraries() -> None:
    core = _core_modules()
    assert {"clipdesk.services", "clipdesk.models.encoder", "clipdesk.cli.main"} <= set(core)
    loaded = _loaded_after_import(core)
    for heavy in ("PySide6", "PyQt6", "torch", "open_clip", "hnswlib"):
        assert heavy not in loaded, f"importing the core pulled in {heavy}"
