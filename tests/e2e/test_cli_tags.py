"""`clipdesk tags confirm | reject | add | remove | list` and `clipdesk tag --json` with
sources, as a user runs them (separate processes, the trained test model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, FIXTURE_PHOTOS, run_cli, run_cli_json

ENV = {"CLIPDESK_AUTO_EXPORT": "0", "CLIPDESK_BACKEND": "torch-fp32"}


@pytest.fixture(scope="module")
def tagged_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tags")
    photos = base / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    library = base / "library"
    run_cli("add", str(photos), library=library, env=ENV)
    model = ["--model", CLOTHING_SPEC, "--model-config", str(CLOTHING_CONFIG)]
    run_cli("index", *model, library=library, env=ENV)
    run_cli("labels", "create", "clothes", "hat", "shoes", "dress", library=library, env=ENV)
    return library, photos


def _tags(library: Path, path: Path) -> dict[str, str]:
    rows = run_cli_json("tags", "list", str(path), library=library)
    return {t["label"]: t["source"] for t in rows[0]["tags"]}


def test_corrections_stick_through_a_rerun_and_json_says_the_source(
    tagged_library: tuple[Path, Path],
) -> None:
    library, photos = tagged_library
    rows = run_cli_json("tag", "--labels", "clothes", library=library)
    assert all(set(t) == {"label", "score", "source"} for r in rows for t in r["tags"])
    hat = next(r for r in rows if "/hat/" in r["path"] and r["tags"])
    given = hat["tags"][0]["label"]
    done = run_cli("tags", "reject", "--labels", "clothes", given, hat["path"], library=library)
    assert f"rejected {given!r} on 1 photo" in done.stdout
    shoe = str(next((photos / "shoes").glob("*.jpg")))
    run_cli("tags", "confirm", "--labels", "clothes", "shoes", shoe, library=library)
    again = {r["path"]: r for r in run_cli_json("tag", "--labels", "clothes", library=library)}
    assert given not in [t["label"] for t in again[hat["path"]]["tags"]]
    first = again[shoe]["tags"][0]
    assert first["label"] == "shoes" and first["source"] == "confirmed"


def test_add_remove_and_list_by_hand(tagged_library: tuple[Path, Path]) -> None:
    library, photos = tagged_library
    two = [str(p) for p in sorted((photos / "dress").glob("*.jpg"))[:2]]
    out = run_cli("tags", "add", "Family/Grandma", *two, library=library)
    assert "added 'Family/Grandma' on 2 photos" in out.stdout
    assert _tags(library, Path(two[0]))["Family/Grandma"] == "manual"
    counts = {r["tag"]: r["photos"] for r in run_cli_json("tags", "list", library=library)}
    assert counts["Family/Grandma"] == 2
    listed = run_cli_json("search", "tag:Family/Grandma", library=library)
    assert sorted(h["path"] for h in listed) == sorted(two)
    run_cli("tags", "remove", "Family/Grandma", two[0], library=library)
    assert "Family/Grandma" not in _tags(library, Path(two[0]))
    missing = run_cli("tags", "add", "x", "/no/such.jpg", two[1], library=library, check=False)
    assert missing.returncode == 1
    assert "not a photo of the library" in missing.stderr
    assert _tags(library, Path(two[1]))["x"] == "manual"  # the others are done all the same
    wrong = run_cli(
        "tags", "confirm", "--labels", "clothes", "hats", two[1], library=library, check=False
    )
    assert wrong.returncode == 2 and "not a label of 'clothes'" in wrong.stderr


def test_removing_a_tag_a_photo_does_not_have_and_giving_a_folder(
    tagged_library: tuple[Path, Path],
) -> None:
    library, photos = tagged_library
    skirts = [str(p) for p in sorted((photos / "skirt").glob("*.jpg"))]
    nothing = run_cli("tags", "remove", "nothinghere", skirts[0], library=library, check=False)
    assert nothing.returncode == 1
    assert "'nothinghere' is not a tag of these photos (their tags: " in nothing.stderr
    assert "removed" not in nothing.stdout
    with_it = run_cli_json("tags", "list", *skirts, library=library)
    assert "nothinghere" not in {t["label"] for r in with_it for t in r["tags"]}
    run_cli("tags", "add", "Picnic", skirts[0], library=library)
    some = run_cli("tags", "remove", "picnic ", skirts[0], skirts[1], library=library)
    assert "removed 'Picnic' on 1 photo (1 did not have it)" in some.stdout
    assert "Picnic" not in _tags(library, Path(skirts[0]))
    # Only the photo that had it is marked: adding it back to the other one is no "already so".
    again = run_cli("tags", "add", "Picnic", skirts[1], library=library)
    assert "added 'Picnic' on 1 photo" in again.stdout and "already" not in again.stdout
    folder = run_cli("tags", "add", "foldertag", str(photos / "hat"), library=library, check=False)
    assert folder.returncode == 1
    assert f"{photos / 'hat'}: is a folder: give its photos (e.g. {photos / 'hat' / '*'})" in (
        folder.stderr
    )


def test_export_then_import_keeps_the_models_guesses_automatic(
    tagged_library: tuple[Path, Path],
) -> None:
    library, photos = tagged_library
    shoes = photos / "shoes"
    before = run_cli_json("tags", "list", *map(str, sorted(shoes.glob("*.jpg"))), library=library)
    guesses = sum(1 for r in before for t in r["tags"] if t["source"] == "auto")
    assert guesses  # (the test) the model tagged them
    run_cli("tags", "export", "--xmp", str(shoes), library=library)
    done = run_cli("tags", "import", str(shoes), library=library)
    assert f"{guesses} already tags from the model" in done.stdout
    assert "0 tags imported" in done.stdout
    after = run_cli_json("tags", "list", *map(str, sorted(shoes.glob("*.jpg"))), library=library)
    assert after == before
