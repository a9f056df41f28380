"""The rooms' import contracts (pyproject.toml, [tool.importlinter]) hold, and the checker
would see a broken one. `make lint` runs the same contracts with `lint-imports`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"

pytest.importorskip("importlinter", reason="import-linter is a dev dependency")


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_every_contract_is_kept() -> None:
    result = _lint_imports(PYPROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layers_name_every_room() -> None:
    """A new subpackage or top-level module must be given its place in the layers."""
    text = PYPROJECT.read_text(encoding="utf-8")  # (tomllib is not in Python 3.10)
    (layers,) = re.findall(r"^layers = \[\n(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    named = {
        name.strip() for layer in re.findall(r'"([^"]+)"', layers) for name in layer.split("|")
    }
    assert "clipdesk.models" in named
    package = ROOT / "clipdesk"
    rooms = {
        f"clipdesk.{path.stem if path.is_file() else path.name}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").is_file())
    }
    assert rooms - named == set(), "rooms missing from [tool.importlinter] layers"


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    """The check would pass on anything if it checked nothing: with the models layer put
    below the backends (which the encoders import), and numpy forbidden to the core, both
    contracts must break."""
    text = PYPROJECT.read_text(encoding="utf-8")
    swapped = text.replace(
        '    "clipdesk.models",\n    "clipdesk.backends",\n',
        '    "clipdesk.backends",\n    "clipdesk.models",\n',
    ).replace('forbidden_modules = ["PySide6", "shiboken6"]', 'forbidden_modules = ["numpy"]')
    assert swapped.count("numpy") > text.count("numpy") and swapped != text
    bad = tmp_path / "pyproject.toml"
    bad.write_text(swapped, encoding="utf-8")
    result = _lint_imports(bad)
    assert result.returncode != 0
    assert "2 broken" in result.stdout
    assert "clipdesk.models.encoder -> clipdesk.backends" in result.stdout
