"""Duplicates in a real library: planted copies and edits among the fixture photos, indexed
with the project's trained model; the groups, the derived threshold, the keep suggestion,
regrouping without a second neighbour pass."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library
from clipdesk.library.tags import CONFIRMED, MANUAL, set_marks, undo_marks
from clipdesk.models.encoder import ClipEncoder
from clipdesk.search.vector_index import VectorIndex
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, FIXTURE_PHOTOS


def plant(photos: Path) -> dict[Path, set[Path]]:
    """Copies and edits of three photos, as a phone, an editor and a backup leave them:
    each original with the files that duplicate it."""
    a, b, c = (sorted((photos / kind).glob("*.jpg"))[0] for kind in ("dress", "shoes", "skirt"))
    (photos / "backup").mkdir()
    (photos / "edits").mkdir()
    planted: dict[Path, set[Path]] = {a: set(), b: set(), c: set()}

    def save(image: Image.Image, target: Path, original: Path, **options: int) -> None:
        image.save(target, "JPEG", **options)
        planted[original].add(target)

    exact = photos / "backup" / f"{a.stem} (1).jpg"
    shutil.copy2(a, exact)
    planted[a].add(exact)
    with Image.open(a) as im:
        save(
            im.resize((im.width // 2, im.height // 2)),
            photos / "edits" / "small.jpg",
            a,
            quality=90,
        )
    with Image.open(b) as im:
        save(im.convert("RGB"), photos / "backup" / b.name, b, quality=60)  # re-encoded
        w, h = im.size
        save(im.crop((3, 3, w - 3, h - 3)), photos / "edits" / f"{b.stem}-1.jpg", b, quality=90)
    with Image.open(c) as im:
        brighter = ImageEnhance.Brightness(im.convert("RGB")).enhance(1.1)
        save(brighter, photos / "edits" / f"{c.stem}-edited.jpg", c, quality=90)
    return planted


@pytest.fixture(scope="module")
def clothing() -> ClipEncoder:
    return ClipEncoder(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG), "cpu")


@pytest.fixture(scope="module")
def planted_library(
    tmp_path_factory: pytest.TempPathFactory, clothing: ClipEncoder
) -> Iterator[tuple[Clipdesk, Path, dict[Path, set[Path]]]]:
    base = tmp_path_factory.mktemp("duplicates")
    photos = base / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    planted = plant(photos)
    library = Library(base / "library")
    app = Clipdesk(library)
    app.preload(clothing)
    app.add_folders([photos])
    list(app.index(clothing.spec, "cpu"))
    yield app, photos, planted
    library.close()


def _groups_as_paths(report: object) -> list[set[Path]]:
    return [{Path(m.path) for m in g.members} for g in report.groups]  # type: ignore[attr-defined]


def test_planted_duplicates_are_found_and_no_distinct_photos_grouped(
    planted_library: tuple[Clipdesk, Path, dict[Path, set[Path]]],
) -> None:
    app, _, planted = planted_library
    report = app.duplicates()
    assert report.threshold is not None and report.threshold.derived
    assert sorted(map(sorted, _groups_as_paths(report))) == sorted(
        sorted({original} | copies) for original, copies in planted.items()
    )
    for group in report.groups:  # the larger original is suggested, first
        assert Path(group.kept.path) in planted
        assert group.members[0].keep and not any(m.keep for m in group.members[1:])
        assert group.kept.score >= max(m.score for m in group.members)
        assert group.why and not group.burst
        assert group.freed() == sum(m.facts.size for m in group.members[1:])
    assert report.freed == sum(g.freed() for g in report.groups)


def test_exact_copies_alone_and_within_a_folder(
    planted_library: tuple[Clipdesk, Path, dict[Path, set[Path]]],
) -> None:
    app, photos, planted = planted_library
    original = next(p for p, copies in planted.items() if len(copies) == 2)
    exact = app.duplicates(exact=True)
    assert exact.threshold is None
    assert _groups_as_paths(exact) == [{original, photos / "backup" / f"{original.stem} (1).jpg"}]
    assert exact.groups[0].exact and Path(exact.groups[0].kept.path) == original
    # a folder: only its own photos (the edits folder holds no two of one photo)
    assert app.duplicates(photos / "edits").groups == []
    inside = app.duplicates(photos / "dress")
    assert all(photos / "dress" in Path(m.path).parents for g in inside.groups for m in g.members)
    with pytest.raises(ClipdeskError, match="not inside a library folder"):
        app.duplicates(photos.parent / "library")


def test_regrouping_at_another_threshold_reuses_the_neighbour_lists(
    planted_library: tuple[Clipdesk, Path, dict[Path, set[Path]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _, _ = planted_library
    derived = app.duplicates()
    assert derived.threshold is not None
    calls: list[int] = []
    asked = VectorIndex.neighbours

    def counted(self: VectorIndex, vectors: np.ndarray, k: int, ef: int) -> object:
        calls.append(len(vectors))
        return asked(self, vectors, k, ef)

    monkeypatch.setattr(VectorIndex, "neighbours", counted)
    strict = app.duplicates(threshold=0.99995)
    loose = app.duplicates(threshold=derived.threshold.value)
    assert calls == []  # no neighbour query: the lists of the first pass
    assert strict.threshold is not None and not strict.threshold.derived
    assert len([m for g in strict.groups for m in g.members]) < len(
        [m for g in loose.groups for m in g.members]
    )
    assert _groups_as_paths(loose) == _groups_as_paths(derived)
    with pytest.raises(ClipdeskError, match="cosine"):
        app.duplicates(threshold=1.5)


def test_exact_copy_is_said_only_of_photos_that_share_their_content(
    planted_library: tuple[Clipdesk, Path, dict[Path, set[Path]]],
) -> None:
    app, photos, planted = planted_library
    report = app.duplicates()
    by_kept = {Path(g.kept.path): g for g in report.groups}
    for original, copies in planted.items():
        group = by_kept[original]
        exact = photos / "backup" / f"{original.stem} (1).jpg"
        shares = {Path(m.path): m.exact_copy for m in group.members}
        if exact in copies:  # the original, its byte-identical copy, and a smaller edit
            assert shares == {original: True, exact: True, photos / "edits" / "small.jpg": False}
            assert group.kind == "mixed"
            assert all(m.as_json()["exact_copy"] == shares[Path(m.path)] for m in group.members)
        else:  # only near-duplicates: the kept photo is no exact copy of anything
            assert not any(shares.values()) and group.kind == "near-duplicates"
            assert group.kept.as_json()["exact_copy"] is False
    exact_only = app.duplicates(exact=True).groups[0]
    assert exact_only.kind == "exact copies" and exact_only.as_json()["kind"] == "exact copies"
    assert exact_only.why == ["same content; kept the original name (the others look like copies)"]


def test_a_folder_that_is_not_there_is_said_and_a_folder_counts_its_own_photos(
    planted_library: tuple[Clipdesk, Path, dict[Path, set[Path]]],
) -> None:
    app, photos, _ = planted_library
    with pytest.raises(ClipdeskError, match="no such folder"):
        app.duplicates(photos / "nosuch")
    edits = app.duplicates(photos / "edits")
    assert edits.photos == len(list((photos / "edits").iterdir())) < app.duplicates().photos


def test_user_tags_the_kept_photo_lacks_are_listed_per_photo(
    planted_library: tuple[Clipdesk, Path, dict[Path, set[Path]]],
) -> None:
    app, photos, planted = planted_library
    small = photos / "edits" / "small.jpg"
    ids = {Path(m.path): m.photo_id for g in app.duplicates().groups for m in g.members}
    original = next(p for p, copies in planted.items() if small in copies)
    added = set_marks(app.library, [ids[small]], "beach", MANUAL)
    confirmed = set_marks(app.library, [ids[small]], "family", CONFIRMED)
    both = set_marks(app.library, [ids[small], ids[original]], "summer", MANUAL)
    try:
        group = next(g for g in app.duplicates().groups if Path(g.kept.path) == original)
        lost = {Path(m.path): m.tags_lost for m in group.members}
        assert lost[original] == () and sorted(lost[small]) == ["beach", "family"]
        member = next(m for m in group.members if Path(m.path) == small)
        assert sorted(member.as_json()["tags_lost"]) == ["beach", "family"]  # type: ignore[call-overload]
        assert all(lost[Path(m.path)] == () for m in group.members if Path(m.path) != small)
    finally:
        for change in (both, confirmed, added):
            undo_marks(app.library, change)
