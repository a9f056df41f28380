"""Listing photos, one photo's details and thumbnails: the Qt-free parts of the app."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from clipdesk.gui.history import History, View
from clipdesk.imaging import ImageRejected
from clipdesk.library.browsing import PhotoRef
from clipdesk.library.scanning import scan_folders
from clipdesk.progress import CancelToken
from clipdesk.services import Clipdesk


def _scan(app: Clipdesk, folder: Path) -> None:
    app.add_folders([folder])
    list(scan_folders(app.library, CancelToken()))


def test_browse_lists_readable_photos_newest_first(app: Clipdesk, photos: Path) -> None:
    for i, path in enumerate(sorted(photos.rglob("*.jpg"))):
        os.utime(path, (1_600_000_000 + i * 60, 1_600_000_000 + i * 60))
    (photos / "dress" / "broken.jpg").write_bytes(b"not a jpeg")
    _scan(app, photos)
    refs = app.browse()
    assert len(refs) == 30  # the broken file is listed in status, not in the grid
    assert [r.taken_at for r in refs] == sorted((r.taken_at for r in refs), reverse=True)
    assert all(r.fingerprint and r.width and r.height for r in refs)
    hats = app.browse(photos / "hat")
    assert len(hats) == 3 and all("/hat/" in r.path for r in hats)
    assert app.browse(tag="nothing tagged yet") == []


def test_photo_details_reads_camera_from_exif(app: Clipdesk, photos: Path) -> None:
    target = photos / "hat" / "camera.jpg"
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0132] = "2021:06:05 14:30:00"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(target, exif=exif)
    _scan(app, photos)
    photo = app.find_photo(target)
    assert photo is not None
    details = app.photo_details(photo.id)
    assert details is not None
    assert details.camera == "Canon EOS R5"
    assert details.taken_from_exif and details.taken_text == "2021-06-05 14:30"
    assert (details.width, details.height, details.exists) == (64, 48, True)
    target.unlink()
    gone = app.photo_details(photo.id)
    assert gone is not None and not gone.exists and gone.camera is None
    assert app.photo_details(10_000) is None


def test_exposure_leaves_out_what_the_camera_did_not_know(app: Clipdesk, photos: Path) -> None:
    from PIL.TiffImagePlugin import IFDRational

    from clipdesk.library import browsing

    target = photos / "hat" / "exposure.jpg"
    exif = Image.Exif()
    exif[0x010F] = "Dune"
    sub = exif.get_ifd(browsing._EXIF_IFD)
    sub[browsing._EXPOSURE_TIME] = IFDRational(1, 250)
    sub[browsing._F_NUMBER] = IFDRational(0, 1)  # cameras write 0 for "not known"
    sub[browsing._ISO] = 200
    sub[browsing._FOCAL_LENGTH] = IFDRational(0, 0)
    Image.new("RGB", (64, 48), (10, 200, 10)).save(target, exif=exif)
    _scan(app, photos)
    photo = app.find_photo(target)
    assert photo is not None
    details = app.photo_details(photo.id)
    assert details is not None and details.exposure == "1/250 s, ISO 200"


def test_thumbnails_are_cached_in_the_library(app: Clipdesk, photos: Path) -> None:
    _scan(app, photos)
    ref = app.browse()[0]
    before = sorted(photos.rglob("*"))
    made = app.thumbnails.make(ref.path, ref.fingerprint)
    assert made.is_relative_to(app.library.directory)
    with Image.open(made) as thumb:
        assert max(thumb.size) <= app.thumbnails.side
    assert app.thumbnails.cached(ref.fingerprint) == made
    mtime = made.stat().st_mtime_ns
    assert app.thumbnails.make(ref.path, ref.fingerprint) == made  # made once
    assert made.stat().st_mtime_ns == mtime
    assert sorted(photos.rglob("*")) == before  # nothing written beside the photos


def test_a_thumbnail_of_a_broken_file_says_why(app: Clipdesk, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    try:
        app.thumbnails.make(str(broken), "abc")
    except ImageRejected as exc:
        assert "empty file" in str(exc)
    else:
        raise AssertionError("an empty file made a thumbnail")


def test_history_goes_back_and_forward_like_a_browser() -> None:
    history = History()
    ref = PhotoRef(1, "/p/a.jpg", "f", 10, 10, 0.0)
    history.push(View("all"))
    history.push(View("text", "dog"))
    history.push(View("text", "dog on a beach"), replace_current=True)  # refining a query
    history.push(View("similar", ref=ref))
    assert history.back() == View("text", "dog on a beach")
    assert history.back() == View("all")
    assert history.back() is None
    assert history.forward() == View("text", "dog on a beach")
    history.push(View("text", "cat"))  # a new path drops the old forward history
    assert not history.can_go_forward()
    assert View("similar", ref=ref, cutoff=False).describe(12) == "12 photos similar to a.jpg"
    assert View("similar", ref=ref).describe(12) == "12 relevant photos similar to a.jpg"
    assert View("all", tag="pets").describe(1) == "1 photo tagged “pets”"


def test_browse_ids_lists_the_same_photos_in_the_same_order(app: Clipdesk, photos: Path) -> None:
    _scan(app, photos)
    assert app.browse_ids().tolist() == [r.photo_id for r in app.browse()]
    hats = app.browse_ids(photos / "hat")
    assert hats.tolist() == [r.photo_id for r in app.browse(photos / "hat")]
    assert app.browse_ids(tag="nothing tagged yet").size == 0


def test_a_label_two_sets_share_is_one_tag_with_its_best_score_and_both_sets(
    app: Clipdesk, photos: Path
) -> None:
    from clipdesk.library import db
    from clipdesk.library.tags import tags_by_photo

    _scan(app, photos)
    photo_id = app.browse()[0].photo_id
    with app.library.session() as s:
        model = db.Model(key="m", spec="m", dim=2, created_at=0.0)
        s.add(model)
        s.flush()
        for set_name, label, score in [
            ("B", "red", 0.83),
            ("B", "green", 0.72),
            ("A", "red", 0.62),
            ("A", "blue", 0.9),
        ]:
            label_set = s.query(db.LabelSet).filter_by(name=set_name).one_or_none()
            if label_set is None:
                label_set = db.LabelSet(name=set_name, created_at=0.0)
                s.add(label_set)
                s.flush()
            row = db.Label(label_set_id=label_set.id, name=label, position=0)
            s.add(row)
            s.flush()
            s.add(db.PhotoTag(photo_id=photo_id, label_id=row.id, model_id=model.id, score=score))
        s.commit()
        model_id = model.id
    tags = tags_by_photo(app.library, model_id, [photo_id])[photo_id]
    assert [(t.sets, t.label, t.score) for t in tags] == [
        (("A",), "blue", 0.9),
        (("A", "B"), "red", 0.83),
        (("B",), "green", 0.72),
    ]
    assert tags[1].described == "red 83% (automatic, A, B)"
