"""Smart albums: saved searches that follow the library (new, moved and deleted photos),
their counts found again only after the library changed, and ``clipdesk albums``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from clipdesk.errors import ClipdeskError
from clipdesk.search.query import QueryError
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from tests.helpers import FIXTURES, TINY_CONFIG, TINY_SPEC

HATS = "a photo of a hat in:hat"  # the hat folder's photos, best first


def _indexed(app: Clipdesk, photos: Path, spec: ModelSpec) -> None:
    app.add_folders([photos])
    list(app.index(spec, "cpu"))


def _counts(app: Clipdesk) -> dict[str, int | None]:
    return {entry.album.name: entry.count for entry in app.albums()}


def _in(folder: Path) -> set[str]:
    return {str(p) for p in folder.iterdir()}


def test_an_album_follows_new_moved_and_deleted_photos(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    app.save_album("Hats", HATS, cutoff=False, k=50)
    assert {hit.path for hit in app.album("Hats").hits} == _in(photos / "hat")
    assert _counts(app) == {"Hats": 3}

    # two new hats are indexed: the album grows
    for extra in sorted((FIXTURES / "clothing-test" / "hat").glob("*.jpg"))[-2:]:
        shutil.copy(extra, photos / "hat" / extra.name)
    list(app.index())
    assert _counts(app) == {"Hats": 5}
    assert {hit.path for hit in app.album("Hats").hits} == _in(photos / "hat")

    # one is deleted, one moved out of the folder: the album shrinks
    hats = sorted((photos / "hat").iterdir())
    hats[0].unlink()
    os.replace(hats[1], photos / "shoes" / hats[1].name)
    list(app.index())
    assert _counts(app) == {"Hats": 3}
    assert {hit.path for hit in app.album("Hats").hits} == _in(photos / "hat")


def test_counts_are_searched_again_only_after_the_library_changed(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    _indexed(app, photos, tiny_spec)
    app.save_album("Hats", HATS, cutoff=False, k=50)
    app.save_album("Shirts", "a photo of a shirt")  # the cutoff decides how many
    searches: list[str] = []
    search = app.search

    def counted(query: object, **options: object) -> object:
        searches.append(str(query))
        return search(query, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(app, "search", counted)
    first = _counts(app)
    assert len(searches) == 2 and first["Hats"] == 3
    assert first["Shirts"] is not None and 0 <= first["Shirts"] <= 30
    for _ in range(3):  # sidebar refreshes: nothing changed, nothing searched
        assert _counts(app) == first
    assert len(searches) == 2
    extra = sorted((FIXTURES / "clothing-test" / "hat").glob("*.jpg"))[-1]
    shutil.copy(extra, photos / "hat" / extra.name)
    list(app.index())
    assert _counts(app)["Hats"] == 4
    assert len(searches) == 4  # both again, once
    assert _counts(app)["Hats"] == 4 and len(searches) == 4
    # replacing an album's query counts that album again, not the others
    app.save_album("Hats", "a photo of a hat in:shoes", cutoff=False, k=50, replace=True)
    assert _counts(app)["Hats"] == 3 and len(searches) == 5


def test_an_album_of_a_tag_follows_the_tagging(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    app.create_label_set("kinds", ["a hat", "a shoe"])
    list(app.tag("kinds", photos / "hat"))  # only the hats get tags so far
    app.save_album("Hats", 'tag:"a hat"')
    before = len(app.browse(tag="a hat"))
    assert before <= 3 and _counts(app) == {"Hats": before}
    list(app.tag("kinds"))  # the whole library: no photo added, the tags changed
    after = len(app.browse(tag="a hat"))
    assert after > before and _counts(app) == {"Hats": after}
    assert {hit.path for hit in app.album("Hats").hits} == {
        ref.path for ref in app.browse(tag="a hat")
    }
    app.delete_label_set("kinds")  # the tag is gone: the album says why it cannot run
    (entry,) = app.albums()
    assert entry.count is None and "a hat" in str(entry.error)


def test_an_album_of_filters_only_lists_every_photo_that_passes(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    app.save_album("Pants", "in:pants", sort="oldest")
    ranking = app.album("Pants")
    assert {hit.path for hit in ranking.hits} == _in(photos / "pants")
    taken = [hit.taken_at for hit in ranking.hits]
    assert taken == sorted(taken)
    # an album nothing passes yet is empty, not an error: it fills as photos come
    app.save_album("Future", "a hat after:2099")
    assert app.album("Future").hits == []
    assert _counts(app)["Future"] == 0


def test_saving_checks_the_name_and_the_query(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    _indexed(app, photos, tiny_spec)
    app.save_album("Hats", HATS)
    with pytest.raises(ClipdeskError, match="an album named 'Hats' exists already"):
        app.save_album("Hats", "shoes")
    assert app.albums()[0].album.query == HATS
    with pytest.raises(QueryError, match="2023-13"):
        app.save_album("Bad", "beach after:2023-13")
    with pytest.raises(ClipdeskError, match="needs a name"):
        app.save_album("  ", "beach")
    with pytest.raises(ClipdeskError, match="needs a query"):
        app.save_album("Empty", "   ")
    with pytest.raises(ClipdeskError, match="no album named 'Nope'"):
        app.album("Nope")
    assert [a.album.name for a in app.albums()] == ["Hats"]
    # relative paths are kept absolute: the album runs from any folder later
    monkeypatch.chdir(photos)
    saved = app.save_album("Here", "hat in:./hat + ./shoes/" + os.listdir("shoes")[0])
    assert f"in:{photos / 'hat'}" in saved.query
    assert str(photos / "shoes") in saved.query
    monkeypatch.chdir(photos.parent)
    assert {hit.path for hit in app.album("Here").hits} <= _in(photos / "hat")


def test_rename_and_delete(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> None:
    _indexed(app, photos, tiny_spec)
    app.save_album("Hats", HATS, cutoff=False, k=50)
    app.save_album("Shoes", "shoe in:shoes", cutoff=False, k=50)
    with pytest.raises(ClipdeskError, match="exists already"):
        app.rename_album("Hats", "Shoes")
    app.rename_album("Hats", "Caps")
    assert _counts(app) == {"Caps": 3, "Shoes": 3}
    app.delete_album("Caps")
    assert _counts(app) == {"Shoes": 3}
    with pytest.raises(ClipdeskError, match="no album named 'Caps'"):
        app.delete_album("Caps")


def test_an_album_whose_folder_left_the_library_says_why(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    app.save_album("Hats", f"hat in:{photos / 'hat'}")
    app.remove_folder(photos)
    (entry,) = app.albums()
    assert entry.count is None and entry.error is not None
    assert "not a folder of the library" in entry.error


# -- the command line ------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from clipdesk.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_clipdesk_albums_save_list_show_delete(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = ["--library", str(tmp_path / "lib")]
    model = ["--model", TINY_SPEC, "--model-config", str(TINY_CONFIG), "--device", "cpu"]
    assert _cli(capsys, *lib, "add", str(photos))[0] == 0
    assert _cli(capsys, *lib, "index", *model)[0] == 0

    code, out, _ = _cli(
        capsys,
        *lib,
        "albums",
        "save",
        "Hats",
        "a photo of a hat",
        "--folder",
        str(photos / "hat"),
        "--type",
        "jpg",
        "--cutoff",
        "none",
        "-k",
        "50",
    )
    assert code == 0 and "saved the album Hats" in out
    code, out, _ = _cli(capsys, *lib, "albums", "list", "--json")
    (listed,) = json.loads(out)
    assert listed == {
        "name": "Hats",
        "query": f"a photo of a hat in:{photos / 'hat'} type:jpg",
        "cutoff": "none",
        "sort": "relevance",
        "k": 50,
        "count": 3,
        "error": None,
    }
    code, out, _ = _cli(capsys, *lib, "albums", "list")
    assert code == 0 and out.startswith("Hats  (3 photos)  a photo of a hat in:")

    code, out, _ = _cli(capsys, *lib, "albums", "show", "Hats", "--json")
    shown = json.loads(out)
    assert code == 0 and {hit["path"] for hit in shown} == _in(photos / "hat")
    for hit in shown:
        assert set(hit) == {"path", "score", "id", "width", "height", "taken_at"}
        assert isinstance(hit["id"], int) and isinstance(hit["score"], float)
    scores = [hit["score"] for hit in shown]
    assert scores == sorted(scores, reverse=True)
    code, out, _ = _cli(capsys, *lib, "albums", "show", "Hats")
    assert code == 0 and len(out.splitlines()) == 3

    code, out, _ = _cli(capsys, *lib, "albums", "delete", "Hats")
    assert code == 0 and "deleted the album Hats" in out
    code, out, _ = _cli(capsys, *lib, "albums", "list")
    assert code == 0 and out.startswith("no albums yet")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "Nope"], "no album named 'Nope'"),
        (["delete", "Nope"], "no album named 'Nope'"),
        (["save", "Bad", "beach", "--after", "2023-13"], "--after 2023-13"),
        (["save", "Bad", "beach after:2023-02-30"], "2023-02-30"),
        (["save", "Bad", "beach", "--type", "pdf"], "pdf"),
    ],
)
def test_clipdesk_albums_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _cli(capsys, "--library", str(tmp_path / "lib"), "albums", *argv)
    assert code == 2 and out == ""
    assert err.startswith("clipdesk: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_clipdesk_albums_save_twice_needs_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = ["--library", str(tmp_path / "lib"), "albums", "save"]
    assert _cli(capsys, *lib, "Beach", "beach")[0] == 0
    code, _, err = _cli(capsys, *lib, "Beach", "sea")
    assert code == 2 and "exists already" in err
    assert _cli(capsys, *lib, "Beach", "sea", "--sort", "newest", "--replace")[0] == 0
    code, out, _ = _cli(capsys, "--library", str(tmp_path / "lib"), "albums", "list", "--json")
    (album,) = json.loads(out)
    assert (album["query"], album["sort"], album["cutoff"], album["count"]) == (
        "sea",
        "newest",
        "auto",
        0,  # nothing indexed yet
    )
