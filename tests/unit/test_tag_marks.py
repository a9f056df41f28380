"""The user's word on tags sticks: confirmed, rejected, manual and imported tags are kept
apart from the model's, by content, through re-runs, renames, moves and a model switch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from clipdesk.errors import ClipdeskError
from clipdesk.library import db
from clipdesk.library import tags as tag_rule
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from clipdesk.tagging.zero_shot import Classifier


def _unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    unit: np.ndarray = array / np.linalg.norm(array, axis=1, keepdims=True)
    return unit


def test_an_excluded_label_is_never_given_and_the_next_best_wins() -> None:
    classifier = Classifier(
        ("cat", "dog"), _unit([[1, 0, 0], [0, 1, 0]]), _unit([[0, 0, 1]])[0], 100.0
    )
    photos = _unit([[0.9, 0.6, 0.1], [0.9, 0.6, 0.1]])
    excluded = np.array([[True, False], [False, False]])
    single = classifier.single(photos, excluded)
    assert [d[0][0] for d in single] == [1, 0]  # the first photo gets dog, not cat
    multi = classifier.multi_label(photos, excluded)
    assert all(j != 0 for j, _ in multi[0]) and multi[1][0][0] == 0


@pytest.fixture()
def tagged(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> Clipdesk:
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    app.create_label_set("clothes", ["hat", "shoes", "dress"])
    list(app.tag("clothes"))
    return app


def _photo(app: Clipdesk, path: Path) -> db.Photo:
    photo = app.find_photo(path)
    assert photo is not None
    return photo


def _labels(app: Clipdesk, path: Path) -> dict[str, str]:
    photo = _photo(app, path)
    return {t.label: t.source for t in app.tags_of([photo.id]).get(photo.id, [])}


def test_confirm_reject_add_remove_and_every_view_tells_them_apart(
    tagged: Clipdesk, photos: Path
) -> None:
    app = tagged
    results = {r.path: r for r in app.photo_tags("clothes")}
    auto_path, auto = next((p, r) for p, r in results.items() if r.tags)
    label = auto.tags[0].label
    assert auto.tags[0].source == "auto" and auto.tags[0].score is not None
    photo = _photo(app, Path(auto_path))
    other = next(p for p in photos.rglob("*.jpg") if str(p) != auto_path)

    # Reject the model's tag: it is gone from every view, and a re-run does not give it.
    change = app.mark_tag(label, [photo.id], "rejected")
    assert label not in _labels(app, Path(auto_path))
    assert photo.id not in tag_rule.photos_with_tag(app.library, 1, label)
    list(app.tag("clothes"))
    rerun = {r.path: r for r in app.photo_tags("clothes")}[auto_path]
    assert label not in [t.label for t in rerun.tags]
    with app.library.session() as s:
        given = s.scalars(
            select(db.Label.name)
            .join(db.PhotoTag, db.PhotoTag.label_id == db.Label.id)
            .where(db.PhotoTag.photo_id == photo.id)
        ).all()
    assert label not in given  # not even stored as the model's
    # Undo puts the model's tag back on view.
    app.undo_mark(change)
    list(app.tag("clothes"))
    assert _labels(app, Path(auto_path)).get(label) == "auto"

    # Confirm it: it stays, with its score, and says so.
    app.mark_tag(label, [photo.id], "confirmed")
    (tag,) = [t for t in app.tags_of([photo.id])[photo.id] if t.label == label]
    assert tag.source == "confirmed" and tag.score is not None
    assert "confirmed by you" in tag.described

    # A tag of one's own, on two photos; completion knows it; counts and the filter too.
    app.mark_tag("grandma", [photo.id, _photo(app, other).id], "manual")
    assert _labels(app, other)["grandma"] == "manual"
    assert "grandma" in app.known_tags()
    assert app.status().tags["grandma"] == 2
    ranking = app.search("tag:grandma")
    assert {h.path for h in ranking.hits} == {auto_path, str(other)}
    details = app.photo_details(_photo(app, other).id)
    assert details is not None and any(
        t.label == "grandma" and t.source == "manual" for t in details.tags
    )
    # Remove works on any source and sticks.
    app.mark_tag("grandma", [_photo(app, other).id], "rejected")
    assert "grandma" not in _labels(app, other)
    assert app.status().tags["grandma"] == 1


def test_marks_follow_the_content_through_a_move_and_a_model_switch(
    tagged: Clipdesk, photos: Path
) -> None:
    app = tagged
    path = next((photos / "hat").glob("*.jpg"))
    app.mark_tag("summer", [_photo(app, path).id], "manual")
    app.mark_tag("shoes", [_photo(app, path).id], "confirmed")
    moved = photos / "elsewhere" / "renamed.jpg"
    moved.parent.mkdir()
    shutil.move(path, moved)
    list(app.index(app.current_spec(), "cpu"))  # the scan finds the move
    assert app.find_photo(path) is None
    labels = _labels(app, moved)
    assert labels["summer"] == "manual" and labels["shoes"] == "confirmed"
    # Under a model that has not tagged anything, the user's tags are still there.
    photo = _photo(app, moved)
    other_model = tag_rule.tags_by_photo(app.library, None, [photo.id])[photo.id]
    assert {t.label: t.source for t in other_model} == {"summer": "manual", "shoes": "confirmed"}


def test_an_import_never_overrides_what_the_user_said(tagged: Clipdesk, photos: Path) -> None:
    app = tagged
    first, second = sorted(photos.rglob("*.jpg"))[:2]
    ids = [_photo(app, first).id, _photo(app, second).id]
    app.mark_tag("beach", [ids[0]], "rejected")
    change = tag_rule.set_marks(app.library, ids, "beach", "imported", keep=tag_rule.MARKS)
    assert change.changed == 1
    assert "beach" not in _labels(app, first)
    assert _labels(app, second)["beach"] == "imported"


def test_tag_names_are_checked(tagged: Clipdesk) -> None:
    with pytest.raises(ClipdeskError, match="a tag needs a name"):
        tagged.mark_tag("  ", [1], "manual")
    with pytest.raises(ClipdeskError, match="not a label of 'clothes'"):
        tagged.check_label("clothes", "hats")
    with pytest.raises(ClipdeskError, match="no label set named 'nope'"):
        tagged.check_label("nope", "hat")


def test_tag_names_are_kept_in_one_form() -> None:
    nfd = "Cafe\u0301"
    assert tag_rule.clean_tag_name(nfd) == "Caf\u00e9"
    assert tag_rule.clean_tag_name("  A//B/ ") == "A/B"
    assert tag_rule.clean_tag_name("Family /  Grandma  Rose") == "Family/Grandma Rose"
    for bad in ("/", "  ", "bad\x1b[31mred", "tab\there", "A|B"):
        with pytest.raises(ValueError):
            tag_rule.clean_tag_name(bad)


def test_a_tag_spelled_another_way_is_the_same_tag(tagged: Clipdesk, photos: Path) -> None:
    app = tagged
    first, second = sorted(photos.rglob("*.jpg"))[:2]
    app.mark_tag("Family/Grandma", [_photo(app, first).id], "manual")
    app.mark_tag("family/grandma", [_photo(app, second).id], "manual")
    app.mark_tag("Caf\u00e9", [_photo(app, first).id], "manual")
    app.mark_tag("Cafe\u0301", [_photo(app, second).id], "manual")
    counts = app.status().tags
    assert counts["Family/Grandma"] == 2 and "family/grandma" not in counts
    assert counts["Caf\u00e9"] == 2
    ranking = app.search("tag:family/GRANDMA")
    assert {h.path for h in ranking.hits} == {str(first), str(second)}
    with pytest.raises(ClipdeskError, match="control characters"):
        app.mark_tag("bad\x1b[31m", [_photo(app, first).id], "manual")
