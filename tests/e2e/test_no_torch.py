"""The CLI as the CPU bundle runs it: torch and open_clip cannot be imported at all, the
exported model does everything (index, search, similar, tag, status), and finds the same
photos as open_clip on torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipdesk.models import export_files
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, run_cli_json

# Any import of torch, torchvision or open_clip fails, as in a bundle that lacks them.
WITHOUT_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "open_clip"):
            raise ImportError(f"{name} is not in this build")
        return None
sys.meta_path.insert(0, NoTorch())
from clipdesk.cli.main import main
code = main(sys.argv[1:])
assert not {"torch", "open_clip"} & set(sys.modules), "torch was imported"
sys.exit(code)
"""
QUERIES = ["a photo of shoes", "a red dress", "pants", "a hat"]


def _no_torch_run(
    *args: str, library: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "--library", str(library), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )


def _no_torch_cli(*args: str, library: Path, env: dict[str, str]) -> str:
    proc = _no_torch_run(*args, library=library, env=env)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_cli_without_torch_runs_on_the_export(
    clothing_export: Path, photos: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    export_files.install_export(clothing_export, models)
    # f32 compute: the export itself is compared here; bf16 has its own fidelity test.
    env = {"CLIPDESK_MODELS_DIR": str(models), "CLIPDESK_BACKEND": "openvino-fp32"}
    library = tmp_path / "no-torch-library"
    model = ["--model", CLOTHING_SPEC, "--model-config", str(CLOTHING_CONFIG)]
    _no_torch_cli("add", str(photos), library=library, env=env)
    _no_torch_cli("index", *model, library=library, env=env)
    status = json.loads(_no_torch_cli("status", "--json", library=library, env=env))
    assert status["indexed"] == 30 and "openvino" in status["device"].lower(), status
    got = {
        q: json.loads(_no_torch_cli("search", q, "-k", "10", "--json", library=library, env=env))
        for q in QUERIES
    }
    assert Path(got["a photo of shoes"][0]["path"]).parent.name == "shoes"

    # The same photos, in the same order, as open_clip on torch finds in its own library.
    reference = tmp_path / "torch-library"
    from tests.helpers import run_cli

    run_cli("add", str(photos), library=reference)
    run_cli("index", *model, library=reference)
    for query in QUERIES:
        want = run_cli_json("search", query, "-k", "10", library=reference)
        assert [Path(h["path"]).name for h in got[query]] == [Path(h["path"]).name for h in want], (
            query
        )
        assert [h["score"] for h in got[query]] == pytest.approx(
            [h["score"] for h in want], abs=2e-3
        )

    similar = json.loads(
        _no_torch_cli("similar", got["pants"][0]["path"], "--json", library=library, env=env)
    )
    assert similar and similar[0]["path"] != got["pants"][0]["path"]
    _no_torch_cli("labels", "create", "kinds", "shoes", "hat", "dress", library=library, env=env)
    tags = json.loads(_no_torch_cli("tag", "--labels", "kinds", "--json", library=library, env=env))
    assert len(tags) == 30 and any(t["tags"] for t in tags)


def test_without_torch_a_model_without_export_fails_clearly(tmp_path: Path, photos: Path) -> None:
    env = {"CLIPDESK_MODELS_DIR": str(tmp_path / "models")}
    library = tmp_path / "library"
    _no_torch_cli("add", str(photos), library=library, env=env)
    proc = _no_torch_run("index", library=library, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "not available in exported form" in proc.stderr and "Traceback" not in proc.stderr


def test_without_torch_downloads_and_weights_imports_are_refused_clearly(tmp_path: Path) -> None:
    env = {"CLIPDESK_MODELS_DIR": str(tmp_path / "models")}
    for args in (
        ["models", "download", "vit-b-32"],
        ["models", "import", "--name", "x", "--weights", str(tmp_path / "x.safetensors")],
    ):
        proc = _no_torch_run(*args, library=tmp_path / "lib", env=env)
        assert proc.returncode == 2, proc.stderr
        assert "CPU version" in proc.stderr and "Traceback" not in proc.stderr
