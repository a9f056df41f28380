"""The CLI as a user runs it: separate processes, real photos, a real library on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import (
    OpenClipReference,
    fixture_photo_paths,
    recall_at_k,
    run_cli,
    run_cli_json,
    top_k,
)

VIT = "ViT-B-32:random"  # the default architecture, seeded random weights


@pytest.fixture(scope="module")
def vit_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import shutil

    from tests.helpers import FIXTURE_PHOTOS

    base = tmp_path_factory.mktemp("vit")
    photos = base / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    library = base / "library"
    out = run_cli("add", str(photos), library=library)
    assert "added" in out.stdout
    out = run_cli("index", "--model", VIT, "--device", "cpu", library=library)
    assert "30 of 30 photos indexed, 0 failed" in out.stdout
    assert "random weights" in out.stdout
    return library, photos


def test_search_and_similar_equal_a_brute_force_open_clip_ranking(
    vit_library: tuple[Path, Path],
) -> None:
    library, photos = vit_library
    paths = sorted(photos.rglob("*.jpg"))
    reference = OpenClipReference("ViT-B-32")
    vectors = reference.embed_files(paths)
    recalls = []
    for query in ("a photo of a hat", "a pair of shoes", "a red dress", "jeans"):
        got = run_cli_json("search", query, "-k", "10", library=library)
        assert [h["score"] for h in got] == sorted((h["score"] for h in got), reverse=True)
        expected = [str(paths[i]) for i in top_k(vectors, reference.embed_text(query), 10)]
        recalls.append(recall_at_k([str(h["path"]) for h in got], expected))
    for i in (0, 7, 15, 29):
        got = run_cli_json("similar", str(paths[i]), "-k", "10", library=library)
        assert str(paths[i]) not in [h["path"] for h in got]
        expected = [str(paths[j]) for j in top_k(vectors, vectors[i], 10, exclude=i)]
        recalls.append(recall_at_k([str(h["path"]) for h in got], expected))
    assert sum(recalls) / len(recalls) >= 0.98, recalls


def test_status_json_and_text(vit_library: tuple[Path, Path]) -> None:
    library, photos = vit_library
    status = json.loads(run_cli("status", "--json", library=library).stdout)
    assert status["photos"] == status["indexed"] == 30
    assert status["failed"] == [] and status["random_weights"] is True
    assert status["device"].startswith("cpu")
    assert status["folders"][0]["path"] == str(photos)
    text = run_cli("status", library=library).stdout
    assert "30 indexed" in text and "random weights" in text


def test_plain_search_output_and_k(vit_library: tuple[Path, Path]) -> None:
    library, _ = vit_library
    lines = run_cli("search", "a shirt", "-k", "3", library=library).stdout.splitlines()
    assert len(lines) == 3
    assert all(line.split("  ", 1)[1].endswith(".jpg") for line in lines)


def test_rerun_is_incremental_and_library_is_sound(vit_library: tuple[Path, Path]) -> None:
    library, _ = vit_library
    out = run_cli("index", library=library)  # the library remembers its model
    assert "0 new" in out.stdout and "30 of 30" in out.stdout
    con = sqlite3.connect(library / "library.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


def test_tiny_model_from_a_config_and_a_local_weights_file(tmp_path: Path, photos: Path) -> None:
    """--model-config registers a custom architecture; PRETRAINED may be a weights file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from tests.helpers import TINY_CONFIG

    config = tmp_path / "my-tiny.json"
    config.write_text(TINY_CONFIG.read_text())
    open_clip.add_model_config(config)
    torch.manual_seed(123)
    model = open_clip.create_model("my-tiny", pretrained=None)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    library = tmp_path / "lib"
    run_cli("add", str(photos), library=library)
    spec = f"my-tiny:{weights}"
    out = run_cli("index", "--model", spec, "--model-config", str(config), library=library)
    assert "30 of 30 photos indexed" in out.stdout and "random" not in out.stdout
    # Search needs no flags: the library stored the model, its config and weights path.
    hits = run_cli_json("search", "a hat", "-k", "5", library=library)
    assert len(hits) == 5
    status = json.loads(run_cli("status", "--json", library=library).stdout)
    assert status["model"] == spec and status["model_key"].startswith("my-tiny#")

    # Its export: made once, kept when asked again, replaced with --again
    exports = tmp_path / "exports"
    first = run_cli("models", "export", "--to", str(exports), library=library)
    folder = Path(first.stdout.strip())
    assert folder.parent == exports and "exported to" in first.stderr
    kept = run_cli("models", "export", "--to", str(exports), library=library)
    assert "already exported" in kept.stderr and "--again" in kept.stderr
    made = (folder / "clipdesk-export.json").stat().st_mtime_ns
    again = run_cli("models", "export", "--again", "--to", str(exports), library=library)
    assert Path(again.stdout.strip()) == folder and "exported to" in again.stderr
    assert (folder / "clipdesk-export.json").stat().st_mtime_ns != made
    assert [p.name for p in exports.iterdir()] == [folder.name]


@pytest.mark.parametrize(
    "args,message",
    [
        (["index", "--model", "ViT-B-32:laion2b_s34b_b79k"], "could not download"),
        (["index", "--model", "ViT-B-32:no_such_tag"], "has no pretrained weights named"),
        (["index", "--model", "ViT-B-32"], "is not ARCH:PRETRAINED"),
        (["index", "--model", "NoSuchNet:random"], "unknown model architecture"),
        (["index", "--model", "ViT-B-32:/nowhere/w.safetensors"], "weights file not found"),
        (["search", "a dog"], "nothing is indexed yet"),
        (["similar", "/nowhere/x.jpg"], "no such photo"),
        (["add", "/nowhere/at/all"], "not a folder"),
        (["index", "--backend", "bogus"], "unknown encoder backend 'bogus'"),
        (["index", "--batch-size", "0"], "must be 1 or more"),
        (["search", "a dog", "-k", "0"], "must be 1 or more"),
        (["similar", "x.jpg", "-k", "ten"], "is not a whole number"),
        (["models", "use", "nosuch"], "no model named 'nosuch'"),
        (["models", "use", "vit-b-32"], "`clipdesk models download vit-b-32`"),
        (["remove", "/nowhere"], "not a library folder"),
    ],
)
def test_errors_are_clear_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    library = tmp_path / "lib"
    if args[0] == "index":
        folder = tmp_path / "photos"
        folder.mkdir()
        run_cli("add", str(folder), library=library)
    proc = run_cli(*args, library=library, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    if "--backend" in args:  # refused, and not kept as the setting for later runs
        con = sqlite3.connect(library / "library.sqlite3")
        try:
            stored = con.execute("SELECT value FROM settings WHERE key = 'backend'").fetchall()
        finally:
            con.close()
        assert stored == []


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "wrong.safetensors"
    save_file({"foo": torch.zeros(3)}, str(weights))
    folder = tmp_path / "photos"
    folder.mkdir()
    run_cli("add", str(folder), library=tmp_path / "lib")
    proc = run_cli("index", "--model", f"ViT-B-32:{weights}", library=tmp_path / "lib", check=False)
    assert proc.returncode == 2 and "cannot load weights" in proc.stderr


def test_no_arguments_without_a_screen_prints_help(tmp_path: Path) -> None:
    # With a screen, no arguments open the window (tests/e2e/test_gui_window.py).
    no_screen = {"DISPLAY": "", "WAYLAND_DISPLAY": "", "QT_QPA_PLATFORM": ""}
    proc = run_cli(library=tmp_path / "lib", env=no_screen, timeout=60)
    assert "usage: clipdesk" in proc.stdout
    assert "needs a screen" in proc.stderr
    gui = run_cli("gui", library=tmp_path / "lib", env=no_screen, check=False, timeout=60)
    assert gui.returncode == 2 and "xvfb-run" in gui.stderr


def test_fixture_photos_are_present() -> None:
    assert len(fixture_photo_paths()) == 30


def test_index_without_folders_says_how_to_add_one(tmp_path: Path) -> None:
    proc = run_cli("index", library=tmp_path / "lib", check=False)
    assert proc.returncode == 2 and "clipdesk add FOLDER" in proc.stderr
