"""The CLI as people type it and read it: options after the command, what one run prints,
names that could drive the terminal, and the first run without a network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipdesk.cli.main import _parser
from clipdesk.cli.output import plural, printable
from tests.helpers import FIXTURE_PHOTOS, TINY_CONFIG, TINY_SPEC, run_cli

TINY = ["--model", TINY_SPEC, "--model-config", str(TINY_CONFIG)]
EVIL = "\x1b]0;owned\x07\x1b[2Jcap.jpg"  # retitles the window, clears the screen


@pytest.mark.parametrize(
    "argv,library,verbose",
    [
        (["gui", "--library", "L"], "L", False),
        (["--library", "A", "index"], "A", False),
        (["--library", "A", "index", "--library", "B"], "B", False),
        (["index", "-v"], None, True),
        (["-v", "tag", "--labels", "x"], None, True),
        (["tag", "--labels", "x", "--verbose"], None, True),
        (["labels", "create", "s", "a beach", "--library", "L"], "L", False),
        (["models", "list", "--library", "L", "-v"], "L", True),
        (["status"], None, False),
    ],
)
def test_global_options_are_taken_after_the_command_too(
    argv: list[str], library: str | None, verbose: bool
) -> None:
    args = _parser().parse_args(argv)
    assert args.library == library
    assert args.verbose is verbose


def test_words_and_names_for_the_terminal() -> None:
    assert plural(1, "label") == "1 label" and plural(2, "label") == "2 labels"
    assert plural(1_000, "photo") == "1,000 photos"
    shown = printable(EVIL)
    assert "\x1b" not in shown and "\x07" not in shown and shown.endswith("cap.jpg")
    assert printable("Été \udcff.jpg") == "Été \udcff.jpg"  # letters and undecodable bytes stay


@pytest.fixture(scope="module")
def small_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("words")
    photos = base / "photos"
    photos.mkdir()
    for i, source in enumerate(sorted(FIXTURE_PHOTOS.rglob("*.jpg"))[::5]):
        shutil.copy(source, photos / (EVIL if i == 0 else source.name))
    library = base / "lib"
    run_cli("add", str(photos), library=library)
    out = run_cli("index", *TINY, library=library)
    assert "6 files seen" in out.stdout and "6 of 6 photos indexed" in out.stdout
    return library, photos


def test_no_output_carries_a_terminal_escape_from_a_file_name(
    small_library: tuple[Path, Path],
) -> None:
    library, _ = small_library
    for args in (["search", "a cap", "-k", "6"], ["status"]):
        out = run_cli(*args, library=library).stdout
        assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2Jcap.jpg" in run_cli("search", "a cap", "-k", "6", library=library).stdout


def test_tag_prints_a_summary_and_lists_photos_only_when_asked(
    small_library: tuple[Path, Path],
) -> None:
    library, _ = small_library
    created = run_cli("labels", "create", "one", "a cap", library=library)
    assert created.stdout.strip() == "label set 'one': 1 label"
    run_cli("labels", "create", "kinds", "a cap", "a shoe", "a dress", library=library)
    summary = run_cli("tag", "--labels", "kinds", library=library).stdout.splitlines()
    assert len(summary) == 1 and summary[0].startswith("6 of 6 photos tagged with 'kinds': ")
    verbose = run_cli("tag", "--labels", "kinds", "-v", library=library)
    assert "INFO root" not in verbose.stderr  # -v lists photos, not other libraries' chatter
    listed = verbose.stdout.splitlines()
    assert len(listed) == 7 and all(".jpg: " in line for line in listed[:6])
    assert not any("\x1b" in line for line in listed)
    typo = run_cli("search", "x", "--tag", "a cpa", library=library, check=False)
    assert "(tags: a cap, a dress, a shoe)" in typo.stderr  # "a cap" is in both sets: once


def _library_of_three(folder: Path, library: Path) -> None:
    """A library with ``folder`` added, holding three of the fixture photos."""
    folder.mkdir()
    for source in sorted(FIXTURE_PHOTOS.rglob("*.jpg"))[:3]:
        shutil.copy(source, folder / source.name)
    run_cli("add", str(folder), library=library)


def test_models_use_switches_and_indexes_as_the_readme_says(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    _library_of_three(tmp_path / "photos", library)
    out = run_cli("models", "use", "ViT-B-32:random", library=library)
    assert "3 of 3 photos indexed, 0 failed" in out.stdout
    assert "ViT-B-32:random" in run_cli("status", library=library).stdout


def test_first_run_offline_says_what_to_fetch_and_how_to_import_it(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    library = tmp_path / "lib"
    run_cli("add", str(folder), library=library)
    env = {"HF_HUB_OFFLINE": "1", "CLIPDESK_MODELS_DIR": str(tmp_path / "models")}
    proc = run_cli("index", library=library, check=False, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ERROR" not in proc.stderr  # no other library's raw log line
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("clipdesk: error: could not download")
    assert "huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert "--arch ViT-B-32" in message and "open_clip_model.safetensors" in message
    status = run_cli("status", library=library, env=env).stdout
    assert "clipdesk models import" in status


def test_a_search_says_which_folders_it_could_not_search(tmp_path: Path) -> None:
    drive, library = tmp_path / "usb", tmp_path / "lib"
    _library_of_three(drive, library)
    run_cli("index", *TINY, library=library)
    found = run_cli("search", "a hat", "-k", "3", library=library)
    assert len(found.stdout.splitlines()) == 3 and "not searched" not in found.stderr
    drive.rename(tmp_path / "unplugged")
    gone = run_cli("search", "a hat", "-k", "3", library=library)
    assert gone.stdout.strip() == "no results"
    assert f"note: not searched: {drive}: folder is missing or not mounted" in gone.stderr
