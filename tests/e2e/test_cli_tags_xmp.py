"""`clipdesk tags export --xmp | --csv | --json` and `clipdesk tags import` as a user runs
them (separate processes), read back by exiftool."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import FIXTURE_PHOTOS, run_cli, run_cli_json
from tests.unit.test_xmp import keywords
from tests.unit.test_xmp_library import unwritable

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="needs exiftool")
ENV = {"CLIPDESK_AUTO_EXPORT": "0", "CLIPDESK_BACKEND": "torch-fp32"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("xmp")
    photos = base / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    library = base / "library"
    run_cli("add", str(photos), library=library, env=ENV)
    # The photos found without a model (`clipdesk index` would embed them too: slower,
    # and nothing here needs a vector): tags are given by hand.
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    found = Library(library)
    try:
        list(Clipdesk(found).scan())
    finally:
        found.close()
    return library, photos


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*.jpg"))}


def test_export_xmp_csv_json_and_a_read_only_folder(
    library: tuple[Path, Path], tmp_path: Path
) -> None:
    lib, photos = library
    hats, shoes = sorted((photos / "hat").glob("*.jpg")), sorted((photos / "shoes").glob("*.jpg"))
    run_cli("tags", "add", "Places/Paris", str(hats[0]), str(shoes[0]), library=lib)
    run_cli("tags", "add", "Blue sky", str(shoes[0]), library=lib)
    before = _state(photos)
    with unwritable(photos / "hat"):
        done = run_cli("tags", "export", "--xmp", library=lib, check=False)
    assert done.returncode == 1
    assert f"error: {photos / 'hat'}: the folder is read-only" in done.stderr
    assert done.stdout.startswith("1 sidecar written, 28 photos without tags; 1 photo not ")
    assert keywords(Path(f"{shoes[0]}.xmp")) == {
        "subject": ["Blue sky", "Paris"],
        "tags_list": ["Blue sky", "Places/Paris"],
        "lr": ["Blue sky", "Places|Paris"],
    }
    assert [p.name for p in photos.rglob("*.xmp")] == [f"{shoes[0].name}.xmp"]
    assert _state(photos) == before  # the photos byte-identical, same mtimes

    again = run_cli("tags", "export", "--xmp", str(photos / "hat"), library=lib)
    assert "1 sidecar written" in again.stdout
    assert keywords(Path(f"{hats[0]}.xmp"))["tags_list"] == ["Places/Paris"]

    run_cli("tags", "export", "--csv", str(tmp_path / "tags.csv"), library=lib)
    rows = list(csv.DictReader((tmp_path / "tags.csv").read_text("utf-8").splitlines()))
    assert len(rows) == 31  # a row per photo and tag; a photo without tags, one row
    assert [(r["tag"], r["source"], r["score"]) for r in rows if r["path"] == str(shoes[0])] == [
        ("Blue sky", "manual", ""),
        ("Places/Paris", "manual", ""),
    ]
    assert [r["tag"] for r in rows if r["path"] == str(shoes[1])] == [""]
    out = run_cli(
        "tags", "export", str(photos / "shoes"), "--json", str(tmp_path / "t.json"), library=lib
    )
    assert "3 photos, 1 with tags" in out.stdout
    data = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert [r["path"] for r in data] == [str(p) for p in shoes]
    assert {"label": "Places/Paris", "score": None, "source": "manual"} in data[0]["tags"]
    assert _state(photos) == before
    both = run_cli("tags", "export", "--xmp", "--csv", "x.csv", library=lib, check=False)
    assert both.returncode == 2  # one form at a time


def test_import_from_a_sidecar_exiftool_wrote_and_from_the_photo(
    library: tuple[Path, Path],
) -> None:
    lib, photos = library
    skirts = sorted((photos / "skirt").glob("*.jpg"))
    subprocess.run(  # Lightroom's name, written by another tool
        [
            "exiftool",
            "-q",
            "-XMP-lr:HierarchicalSubject=Trips|Crete",
            "-XMP-dc:Subject=Crete",
            "-XMP-dc:Subject=Picnic",
            "-o",
            str(skirts[0].with_suffix(".xmp")),
            str(skirts[0]),
        ],
        check=True,
    )
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords=Picnic", str(skirts[1])],
        check=True,
    )
    run_cli("tags", "add", "Picnic", str(skirts[1]), library=lib)
    run_cli("tags", "remove", "Picnic", str(skirts[1]), library=lib)  # the user said no
    before = _state(photos)
    done = run_cli("tags", "import", str(photos / "skirt"), library=lib)
    assert "read 3 photos, 2 with keywords: 2 tags imported (2 names)" in done.stdout
    assert "1 left out because you rejected them" in done.stdout
    listed = {
        r["path"]: r["tags"] for r in run_cli_json("tags", "list", *map(str, skirts), library=lib)
    }
    first = {t["label"]: t["source"] for t in listed[str(skirts[0])]}
    assert first["Trips/Crete"] == first["Picnic"] == "imported" and "Crete" not in first
    assert "Picnic" not in [t["label"] for t in listed[str(skirts[1])]]
    assert _state(photos) == before  # read, never written
    counts = {r["tag"]: r["photos"] for r in run_cli_json("tags", "list", library=lib)}
    assert counts["Trips/Crete"] == 1


def test_a_removed_tag_leaves_the_sidecar_and_a_tag_with_a_separator_reads_back_whole(
    library: tuple[Path, Path], tmp_path: Path
) -> None:
    lib, photos = library
    dresses = sorted((photos / "dress").glob("*.jpg"))
    run_cli("tags", "add", "Family/Grandma", str(dresses[0]), str(dresses[1]), library=lib)
    run_cli("tags", "add", "Work; Travel", str(dresses[1]), library=lib)
    run_cli("tags", "export", "--xmp", str(photos / "dress"), library=lib)
    assert keywords(Path(f"{dresses[0]}.xmp"))["tags_list"] == ["Family/Grandma"]
    run_cli("tags", "remove", "Family/Grandma", str(dresses[0]), str(dresses[1]), library=lib)
    done = run_cli("tags", "export", "--xmp", str(photos / "dress"), library=lib)
    assert done.stdout.startswith("2 sidecars written")
    assert not any(v != [""] and v for v in keywords(Path(f"{dresses[0]}.xmp")).values())
    assert keywords(Path(f"{dresses[1]}.xmp")) == {
        "subject": ["Work; Travel"],
        "tags_list": ["Work; Travel"],
        "lr": ["Work; Travel"],
    }
    run_cli("tags", "export", str(photos / "dress"), "--csv", str(tmp_path / "t.csv"), library=lib)
    rows = list(csv.DictReader((tmp_path / "t.csv").read_text("utf-8").splitlines()))
    assert [r["tag"] for r in rows if r["path"] == str(dresses[1])] == ["Work; Travel"]
    listed = run_cli("tags", "list", str(dresses[1]), library=lib).stdout.splitlines()
    assert listed == [f"{dresses[1]}:", "  Work; Travel (added by you)"]


def test_mistyped_paths_are_errors_and_make_nothing(
    library: tuple[Path, Path], tmp_path: Path
) -> None:
    lib, photos = library
    nowhere = tmp_path / "no" / "dir"
    out = run_cli("tags", "export", "--csv", str(nowhere / "x.csv"), library=lib, check=False)
    assert out.returncode == 2 and f"no such folder: {nowhere}" in out.stderr
    assert not (tmp_path / "no").exists()
    for form in (["--csv", str(tmp_path / "x.csv")], ["--xmp"]):
        typo = photos / "nosuchfolder"
        out = run_cli("tags", "export", *form, str(typo), library=lib, check=False)
        assert out.returncode == 2 and f"no such folder: {typo}" in out.stderr, out
    assert not (tmp_path / "x.csv").exists()


def test_a_broken_sidecar_is_named_itself_and_a_linked_one_written_through(
    library: tuple[Path, Path], tmp_path: Path
) -> None:
    lib, photos = library
    pants = sorted((photos / "pants").glob("*.jpg"))
    run_cli("tags", "add", "Hiking", str(pants[0]), str(pants[1]), library=lib)
    Path(f"{pants[0]}.xmp").write_bytes(b"not xmp at all\n")
    elsewhere = tmp_path / "IMG.xmp"
    subprocess.run(
        ["exiftool", "-q", "-XMP-dc:Subject=kept", "-o", str(elsewhere), str(pants[1])],
        check=True,
    )
    Path(f"{pants[1]}.xmp").symlink_to(elsewhere)
    out = run_cli("tags", "export", "--xmp", str(photos / "pants"), library=lib, check=False)
    assert out.returncode == 1
    assert f"error: {pants[0]}: {pants[0].name}.xmp is no XMP that exiv2 reads" in out.stderr
    assert ".tmp" not in out.stderr
    assert Path(f"{pants[1]}.xmp").is_symlink()
    assert keywords(elsewhere)["subject"] == ["kept", "Hiking"]
