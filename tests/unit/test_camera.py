"""Camera models: read from EXIF Make/Model with the header, stored at scan time, read
later for photos scanned before they were recorded, and the camera: filter on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from clipdesk.imaging import read_header
from clipdesk.library import db, scanning
from clipdesk.library.scanning import scan_folders
from clipdesk.search.filters import CamerasNotReadError, matching_photo_ids
from clipdesk.search.query import Filters
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec

_MAKE, _MODEL = 0x010F, 0x0110

# file name -> (EXIF Make, EXIF Model, the camera clipdesk records)
CAMERAS = {
    "canon-5d.jpg": ("Canon", "Canon EOS 5D", "Canon EOS 5D"),
    "canon-r5.jpg": ("Canon", "EOS R5", "Canon EOS R5"),
    "nikon.jpg": ("NIKON CORPORATION", "NIKON D750", "NIKON D750"),
    "fuji.jpg": ("FUJIFILM\x00  ", " X100V \x00\x00", "FUJIFILM X100V"),
    "phone.jpg": ("Apple", "iPhone 12", "Apple iPhone 12"),
    "model-only.jpg": (None, "DMC-GX80", "DMC-GX80"),
}


def _write(path: Path, make: str | None, model: str | None, colour: int = 0) -> None:
    exif = Image.Exif()
    if make is not None:
        exif[_MAKE] = make
    if model is not None:
        exif[_MODEL] = model
    Image.new("RGB", (80, 60), (colour, 120, 200 - colour)).save(path, exif=exif)


def _camera_photos(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for n, (name, (make, model, _)) in enumerate(CAMERAS.items()):
        _write(folder / name, make, model, colour=30 * n)
    return {str(folder / name): want for name, (_, _, want) in CAMERAS.items()}


def _cameras(app: Clipdesk) -> dict[str, str | None]:
    with app.library.session() as s:
        return {path: camera for path, camera in s.execute(select(db.Photo.path, db.Photo.camera))}


def test_read_header_names_the_camera_from_make_and_model(tmp_path: Path) -> None:
    wanted = _camera_photos(tmp_path)
    for path, want in wanted.items():
        assert read_header(path).camera == want, path
    bare = tmp_path / "bare.jpg"
    Image.new("RGB", (40, 30)).save(bare)
    assert read_header(str(bare)).camera == ""
    png = tmp_path / "shot.png"
    Image.new("RGB", (40, 30)).save(png)
    assert read_header(str(png)).camera == ""


def test_scan_records_cameras_and_the_filter_matches_any_part_in_any_case(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    wanted = _camera_photos(photos / "cameras")
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    recorded = _cameras(app)
    assert {p: recorded[p] for p in wanted} == wanted
    # the committed photos carry no camera: recorded as none (''), not as unread
    assert {c for p, c in recorded.items() if p not in wanted} == {""}

    def found(text: str) -> set[str]:
        hits = app.search(f"a photo {text}", k=100).hits
        return {os.path.basename(h.path) for h in hits}

    assert found("camera:canon") == {"canon-5d.jpg", "canon-r5.jpg"}
    assert found("camera:EOS") == {"canon-5d.jpg", "canon-r5.jpg"}
    assert found("camera:x100v") == {"fuji.jpg"}
    assert found("camera:canon camera:nikon") == {"canon-5d.jpg", "canon-r5.jpg", "nikon.jpg"}
    assert found("camera:d750 in:cameras") == {"nikon.jpg"}
    by_id = matching_photo_ids(app.library, Filters(cameras=("iphone",)))
    assert by_id is not None and len(by_id) == 1
    with pytest.raises(Exception, match="no photo passes"):
        app.search("a photo camera:leica", k=10)


def test_photos_scanned_before_cameras_were_recorded_get_them_on_the_next_scan(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = _camera_photos(photos / "cameras")
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    with app.library.session() as s:  # as a library from before schema 4 has them
        s.execute(update(db.Photo).values(camera=None))
        s.commit()
        rows_before = set(s.execute(select(db.Photo.id, db.Photo.path, db.Photo.fingerprint)))
        embeddings = s.scalar(select(func.count()).select_from(db.Embedding))
    with app.library.engine.connect() as conn:
        generation = db.current_generation(conn)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in photos.rglob("*.jpg")}

    # a camera filter says why it cannot answer yet, instead of finding nothing
    with pytest.raises(CamerasNotReadError, match="read on the next scan"):
        app.search("a photo camera:canon", k=10)

    monkeypatch.setattr(scanning, "_FLUSH_EVERY", 8)  # several batches, each reported
    reports = [p for p in scan_folders(app.library) if p.message == "reading camera models"]
    assert len(reports) == -(-len(rows_before) // 8)
    assert reports[-1].done == reports[-1].total == len(rows_before)

    recorded = _cameras(app)
    assert {p: recorded[p] for p in wanted} == wanted
    assert None not in recorded.values()
    # nothing else changed: same rows, vectors and generation (no re-embedding, no
    # catch-up of the graph), and the photos themselves untouched
    with app.library.session() as s:
        assert set(s.execute(select(db.Photo.id, db.Photo.path, db.Photo.fingerprint))) == (
            rows_before
        )
        assert s.scalar(select(func.count()).select_from(db.Embedding)) == embeddings
    with app.library.engine.connect() as conn:
        assert db.current_generation(conn) == generation
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in photos.rglob("*.jpg")} == files
    hits = app.search("a photo camera:canon", k=10).hits
    assert {os.path.basename(h.path) for h in hits} == {"canon-5d.jpg", "canon-r5.jpg"}


def test_a_changed_or_moved_photo_keeps_a_current_camera(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    folder = photos / "cameras"
    _camera_photos(folder)
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    _write(folder / "nikon.jpg", "Canon", "EOS R6", colour=99)  # replaced by another shot
    (folder / "fuji.jpg").rename(folder / "fuji-renamed.jpg")
    list(scan_folders(app.library))
    recorded = _cameras(app)
    assert recorded[str(folder / "nikon.jpg")] == "Canon EOS R6"
    assert recorded[str(folder / "fuji-renamed.jpg")] == "FUJIFILM X100V"
    assert str(folder / "fuji.jpg") not in recorded
