from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.library.scanning import ScanReport, add_folders, remove_folder, scan_folders


def _scan(library: Library) -> ScanReport:
    report = ScanReport()
    for _ in scan_folders(library, report=report):
        pass
    return report


def _photos(library: Library) -> dict[str, db.Photo]:
    with library.session() as s:
        return {p.path: p for p in s.scalars(select(db.Photo))}


def test_scan_finds_photos_recursively_with_metadata(library: Library, photos: Path) -> None:
    add_folders(library, [photos])
    report = _scan(library)
    rows = _photos(library)
    assert report.new == len(rows) == 30
    some = next(iter(rows.values()))
    assert some.width and some.height and some.fingerprint and some.size > 0
    assert some.error is None and not some.taken_from_exif  # fixtures carry no EXIF date
    assert some.taken_at == pytest.approx(os.stat(some.path).st_mtime)


def test_hidden_folders_and_non_images_are_skipped(library: Library, photos: Path) -> None:
    hidden = photos / ".thumbnails"
    hidden.mkdir()
    shutil.copy(next(photos.rglob("*.jpg")), hidden / "copy.jpg")
    (photos / "readme.txt").write_text("not a photo")
    shutil.copy(next(photos.rglob("*.jpg")), photos / ".hidden.jpg")
    add_folders(library, [photos])
    _scan(library)
    assert len(_photos(library)) == 30


def test_symlink_loop_is_survived(library: Library, photos: Path) -> None:
    (photos / "hat" / "loop").symlink_to(photos, target_is_directory=True)
    add_folders(library, [photos])
    report = _scan(library)
    assert len(_photos(library)) == 30
    assert report.seen == 30


def test_rescan_skips_unchanged_files(library: Library, photos: Path) -> None:
    add_folders(library, [photos])
    _scan(library)
    before = {p: row.id for p, row in _photos(library).items()}
    report = _scan(library)
    assert report.new == report.changed == report.removed == 0
    assert {p: row.id for p, row in _photos(library).items()} == before


def test_changed_file_gets_a_new_row_and_deleted_file_is_swept(
    library: Library, photos: Path
) -> None:
    add_folders(library, [photos])
    _scan(library)
    files = sorted(photos.rglob("*.jpg"))
    changed, deleted = files[0], files[1]
    old = _photos(library)[str(changed)]
    changed.write_bytes(files[2].read_bytes())
    os.utime(changed, ns=(old.mtime_ns + 10**9, old.mtime_ns + 10**9))
    deleted.unlink()
    report = _scan(library)
    rows = _photos(library)
    assert report.changed == 1 and report.removed == 1
    assert str(deleted) not in rows
    assert rows[str(changed)].id != old.id
    assert rows[str(changed)].fingerprint == rows[str(files[2])].fingerprint


def test_missing_root_is_not_swept(library: Library, photos: Path, tmp_path: Path) -> None:
    add_folders(library, [photos])
    _scan(library)
    photos.rename(tmp_path / "unplugged")
    report = _scan(library)
    assert report.removed == 0
    assert len(_photos(library)) == 30
    assert any("missing" in reason for _, reason in report.problems)


def test_add_validates_and_merges_nested_folders(library: Library, photos: Path) -> None:
    with pytest.raises(ClipdeskError, match="not a folder"):
        add_folders(library, [photos / "nope"])
    add_folders(library, [photos / "hat"])
    _scan(library)
    msgs = add_folders(library, [photos])
    assert any("merged" in m for m in msgs)
    assert [r.path for r in library.roots()] == [str(photos)]
    assert any("already" in m for m in add_folders(library, [photos / "shoes"]))
    _scan(library)
    assert len(_photos(library)) == 30
    with pytest.raises(ClipdeskError, match="library folder"):
        add_folders(library, [library.directory])


def test_remove_forgets_photos_but_never_touches_files(library: Library, photos: Path) -> None:
    add_folders(library, [photos])
    _scan(library)
    listing = sorted(photos.rglob("*"))
    assert remove_folder(library, photos) == 30
    assert _photos(library) == {}
    assert sorted(photos.rglob("*")) == listing
    with pytest.raises(ClipdeskError, match="not a library folder"):
        remove_folder(library, photos)


def test_non_utf8_file_names_round_trip(library: Library, photos: Path) -> None:
    if os.name == "nt":
        pytest.skip("file names are UTF-16 on Windows")
    name = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes, not valid UTF-8
    target = os.path.join(str(photos), name)
    shutil.copy(next(photos.rglob("*.jpg")), target)
    add_folders(library, [photos])
    _scan(library)
    rows = _photos(library)
    assert target in rows and rows[target].error is None
    with library.session() as s:
        raw = s.connection().exec_driver_sql("SELECT path FROM photos").scalars().all()
    assert os.fsencode(target) in raw


def test_scan_can_be_cancelled_and_resumed(library: Library, tmp_path: Path) -> None:
    from PIL import Image

    from clipdesk.progress import CancelToken

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(600):
        Image.new("RGB", (8, 8), (i % 256, i // 256, 0)).save(folder / f"{i:04}.png")
    add_folders(library, [folder])
    cancel = CancelToken()
    for _ in scan_folders(library, cancel):
        cancel.cancel()
    with library.session() as s:
        partial = s.scalar(select(func.count()).select_from(db.Photo))
    assert 0 < (partial or 0) < 600
    report = _scan(library)
    assert report.new == 600 - (partial or 0)
    assert len(_photos(library)) == 600
