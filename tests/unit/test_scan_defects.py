"""Issue 17's scanning defects: an unplugged drive whose mount point is the library folder,
renamed photos losing their tags, failed files read again on every run, FIFOs and
devices skipped without a word, and photos that could not be listed without a model."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from clipdesk.library import Library, db
from clipdesk.library.scanning import (
    OTHER_DEVICE,
    ScanReport,
    add_folders,
    remove_folder,
    scan_folders,
)
from clipdesk.progress import CancelToken
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec


def _scan(library: Library) -> ScanReport:
    report = ScanReport()
    for _ in scan_folders(library, report=report):
        pass
    return report


def _counts(library: Library) -> tuple[int, int, int]:
    with library.session() as s:
        return (
            s.scalar(select(func.count()).select_from(db.Photo)) or 0,
            s.scalar(select(func.count()).select_from(db.Embedding)) or 0,
            s.scalar(select(func.count()).select_from(db.PhotoTag)) or 0,
        )


def _ids(library: Library) -> dict[str, int]:
    with library.session() as s:
        return {p.path: p.id for p in s.scalars(select(db.Photo))}


def _indexed_and_tagged(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> tuple[int, int, int]:
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    app.create_label_set("clothes", ["hat", "shoes", "dress"])
    list(app.tag("clothes", multi=True))
    counts = _counts(app.library)
    assert counts[0] == counts[1] == 30 and counts[2] > 0
    return counts


def _unmount(folder: Path, aside: Path) -> None:
    """What unmounting does to a mount point: the same path, now an empty folder."""
    aside.mkdir()
    for child in folder.iterdir():
        child.rename(aside / child.name)


def _mount(folder: Path, aside: Path) -> None:
    for child in aside.iterdir():
        child.rename(folder / child.name)
    aside.rmdir()


# -- an unplugged drive whose mount point is the added folder ------------------------------


def test_an_emptied_mount_point_keeps_photos_vectors_and_tags(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    before = _indexed_and_tagged(app, photos, tiny_spec)
    ids = _ids(app.library)
    _unmount(photos, tmp_path / "usb")
    report = ScanReport()
    list(app.index(report=report))
    assert report.removed == 0 and _counts(app.library) == before
    assert [path for path, _ in report.unavailable] == [str(photos)]
    assert "not mounted" in report.unavailable[0][1]
    folder = app.status().folders[0]
    assert not folder.available and "not mounted" in (folder.reason or "")
    _mount(photos, tmp_path / "usb")
    report = ScanReport()
    list(app.index(report=report))
    assert (report.new, report.removed, report.unavailable) == (0, 0, [])
    assert _ids(app.library) == ids and _counts(app.library) == before
    assert app.status().folders[0].available


def test_another_device_at_the_path_is_not_the_folder(
    library: Library, photos: Path, tmp_path: Path
) -> None:
    add_folders(library, [photos])
    with library.session() as s:
        recorded = s.scalar(select(db.Root.device))
    assert recorded == os.stat(photos).st_dev  # recorded when added
    _scan(library)
    ids = _ids(library)
    # Unmounted: the path is a folder of the disk below, where a stray photo lies.
    _unmount(photos, tmp_path / "usb")
    shutil.copy(next((tmp_path / "usb").rglob("*.jpg")), photos / "stray.jpg")
    with library.session() as s:
        s.execute(update(db.Root).values(device=recorded + 1))  # the drive's own device
        s.commit()
    report = _scan(library)
    assert report.removed == 0 and report.new == 0 and _ids(library) == ids
    assert report.unavailable and "another drive" in report.unavailable[0][1]
    # Plugged in again, under another device number (FUSE, btrfs, NFS renumber at each
    # mount): its photos are there, so it is the folder, and the new number is kept.
    (photos / "stray.jpg").unlink()
    _mount(photos, tmp_path / "usb")
    report = _scan(library)
    assert (report.new, report.removed, report.unavailable) == (0, 0, [])
    with library.session() as s:
        root = s.scalars(select(db.Root)).one()
    assert root.device == os.stat(photos).st_dev and root.unavailable is None


def test_a_folder_added_before_devices_were_recorded_learns_its_device(
    tmp_path: Path, photos: Path
) -> None:
    """A schema-2 library: the folder's device is unknown until a scan finds its photos;
    unplugged at the first scan after the upgrade, nothing is lost nor recorded."""
    folder = tmp_path / "lib"
    folder.mkdir()
    raw = sqlite3.connect(folder / "library.sqlite3")
    for statement in db.MIGRATIONS[0] + db.MIGRATIONS[1]:
        raw.execute(statement)
    raw.execute("INSERT INTO roots (path, added_at) VALUES (?, 0)", (os.fsencode(photos),))
    raw.execute("PRAGMA user_version = 2")
    raw.commit()
    raw.close()
    library = Library(folder)
    try:
        with library.session() as s:
            assert s.scalar(select(db.Root.device)) is None
        report = _scan(library)
        assert report.new == 30
        with library.session() as s:  # first learnt now, the photos being there
            s.execute(update(db.Root).values(device=None))
            s.commit()
        _unmount(photos, tmp_path / "usb")
        report = _scan(library)
        assert report.removed == 0 and len(_ids(library)) == 30 and report.unavailable
        with library.session() as s:
            assert s.scalar(select(db.Root.device)) is None  # not the empty folder's
        _mount(photos, tmp_path / "usb")
        assert _scan(library).unavailable == []
        with library.session() as s:
            assert s.scalar(select(db.Root.device)) == os.stat(photos).st_dev
    finally:
        library.close()


def test_a_partly_emptied_folder_is_swept_and_remove_forgets_on_purpose(
    library: Library, photos: Path
) -> None:
    add_folders(library, [photos])
    _scan(library)
    files = sorted(photos.rglob("*.jpg"))
    for path in files[:25]:
        path.unlink()
    report = _scan(library)
    assert report.removed == 25 and report.unavailable == [] and len(_ids(library)) == 5
    for path in files[25:]:
        path.unlink()
    report = _scan(library)  # the last five at once: as if unplugged, kept
    assert report.removed == 0 and len(_ids(library)) == 5 and report.unavailable
    assert remove_folder(library, photos) == 5  # deleting them on purpose
    assert _ids(library) == {}


def test_a_folder_whose_photos_were_all_renamed_is_not_taken_for_unplugged(
    library: Library, photos: Path
) -> None:
    add_folders(library, [photos])
    _scan(library)
    ids = sorted(_ids(library).values())
    for path in sorted(photos.rglob("*.jpg")):
        path.rename(path.with_name("renamed-" + path.name))
    report = _scan(library)
    assert report.unavailable == [] and (report.moved, report.new, report.removed) == (30, 0, 0)
    assert sorted(_ids(library).values()) == ids
    assert all(os.path.basename(p).startswith("renamed-") for p in _ids(library))


def test_a_folder_with_an_unreadable_part_is_not_taken_for_unplugged(
    library: Library, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "one"
    shutil.copytree(photos / "hat", folder / "a")
    add_folders(library, [folder])
    _scan(library)
    (folder / "b").mkdir()
    shutil.copy(next(photos.rglob("*.jpg")), folder / "b" / "new.jpg")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # "a" cannot be read now (root reads any folder)
        if os.fspath(path) == str(folder / "a"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = _scan(library)
    assert (report.new, report.removed, report.unavailable) == (1, 0, [])
    assert len(_ids(library)) == 4


def test_the_cli_says_the_folder_is_kept_and_how_to_forget_it(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipdesk.cli.main import main

    lib = tmp_path / "lib"
    library = Library(lib)
    add_folders(library, [photos])
    _scan(library)
    _unmount(photos, tmp_path / "usb")
    _scan(library)
    library.close()
    assert main(["--library", str(lib), "status"]) == 0
    out = capsys.readouterr().out
    assert "[missing or not mounted]" in out and f"clipdesk remove {photos}" in out
    assert "30 photos" in out or "30 (" in out


# -- renamed or moved photos keep their tags ------------------------------------------------


def test_a_renamed_or_moved_photo_keeps_its_id_vector_and_tags(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    before = _indexed_and_tagged(app, photos, tiny_spec)
    with app.library.session() as s:
        tagged = s.execute(
            select(db.Photo.path, db.Photo.id, db.Label.name)
            .join(db.PhotoTag, db.PhotoTag.photo_id == db.Photo.id)
            .join(db.Label, db.Label.id == db.PhotoTag.label_id)
            .order_by(db.Photo.path)
        ).first()
    assert tagged is not None
    path, photo_id, label = tagged
    elsewhere = photos / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / ("moved-" + os.path.basename(path))
    os.rename(path, moved)
    report = ScanReport()
    progress = list(app.index(report=report))
    assert (report.moved, report.new, report.removed) == (1, 0, 0)
    assert _ids(app.library)[str(moved)] == photo_id and _counts(app.library) == before
    assert not [p for p in progress if p.phase == "embed" and p.total]  # nothing re-embedded
    hits = app.search_text("anything", k=30, tag=label)
    assert str(moved) in {h.path for h in hits}
    assert any(
        label == t
        for r in app.photo_tags("clothes")
        if r.path == str(moved)
        for t in [tag.label for tag in r.tags]
    )


def test_a_touched_or_copied_back_photo_keeps_its_id_and_tags_a_changed_one_does_not(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed_and_tagged(app, photos, tiny_spec)

    def tags() -> dict[int, set[int]]:
        with app.library.session() as s:
            rows = s.execute(select(db.PhotoTag.photo_id, db.PhotoTag.label_id)).all()
        found: dict[int, set[int]] = {}
        for photo_id, label_id in rows:
            found.setdefault(photo_id, set()).add(label_id)
        return found

    ids, before = _ids(app.library), tags()
    tagged = sorted(path for path, photo_id in ids.items() if photo_id in before)
    touched, copied_back, rewritten = tagged[:3]
    os.utime(touched, ns=(10**18, 10**18))  # only the date changes (touch)
    data = Path(copied_back).read_bytes()
    Path(copied_back).unlink()
    Path(copied_back).write_bytes(data)  # restored from a backup: same bytes, new date
    with open(rewritten, "ab") as f:
        f.write(b"\0" * 64)  # new content (JPEG readers ignore trailing bytes)
    report = ScanReport()
    list(app.index(report=report))
    assert report.changed == 3
    after_ids, after = _ids(app.library), tags()
    for same in (touched, copied_back):
        assert after_ids[same] == ids[same] and after[ids[same]] == before[ids[same]]
    assert after_ids[rewritten] != ids[rewritten] and after_ids[rewritten] not in after
    assert len(after_ids) == 30


def test_tags_follow_a_move_whose_first_scan_was_stopped(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    """Stopped after it stored the new path but before its sweep, a scan leaves the moved
    photo twice; the next one gives the old row's tags to the new one."""
    _indexed_and_tagged(app, photos, tiny_spec)
    with app.library.session() as s:
        path, photo_id = s.execute(
            select(db.Photo.path, db.Photo.id)
            .join(db.PhotoTag, db.PhotoTag.photo_id == db.Photo.id)
            .limit(1)
        ).one()
        tags = s.scalar(select(func.count()).where(db.PhotoTag.photo_id == photo_id))
    copy = photos / "copy.jpg"
    shutil.copy2(path, copy)
    _scan(app.library)  # the new path is stored ...
    os.unlink(path)  # ... and the old one's sweep comes a scan later
    report = _scan(app.library)
    assert report.removed == 1
    new_id = _ids(app.library)[str(copy)]
    with app.library.session() as s:
        assert s.scalar(select(func.count()).where(db.PhotoTag.photo_id == new_id)) == tags


# -- failed files, FIFOs, sockets and devices -----------------------------------------------


def test_a_broken_file_is_read_again_only_once_it_changed(library: Library, photos: Path) -> None:
    broken = photos / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all" * 10)
    add_folders(library, [photos])
    _scan(library)
    with library.session() as s:
        row = s.scalars(select(db.Photo).where(db.Photo.path == str(broken))).one()
    assert row.error
    report = _scan(library)
    assert (report.new, report.changed, report.removed) == (0, 0, 0)
    assert _ids(library)[str(broken)] == row.id
    os.utime(broken, ns=(row.mtime_ns + 10**9, row.mtime_ns + 10**9))
    assert _scan(library).changed == 1


def test_a_file_that_vanished_while_indexing_is_read_again(library: Library, photos: Path) -> None:
    add_folders(library, [photos])
    _scan(library)
    victim = str(next(photos.rglob("*.jpg")))
    with library.session() as s:  # as the embedding pipeline records a drive pulled out
        s.execute(
            update(db.Photo)
            .where(db.Photo.path == victim)
            .values(error="file vanished before it could be read")
        )
        s.commit()
    assert _scan(library).changed == 1
    with library.session() as s:
        assert s.scalar(select(db.Photo.error).where(db.Photo.path == victim)) is None


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_read_again_once_it_may_be_read(
    library: Library, photos: Path
) -> None:
    locked = next(photos.rglob("*.jpg"))
    locked.chmod(0)
    add_folders(library, [photos])
    _scan(library)
    assert _scan(library).changed == 0
    locked.chmod(0o644)  # chmod changes neither size nor mtime
    assert _scan(library).changed == 1
    with library.session() as s:
        assert s.scalar(select(db.Photo.error).where(db.Photo.path == str(locked))) is None


@pytest.mark.skipif(os.name == "nt", reason="no FIFOs or unix sockets")
def test_fifos_sockets_and_devices_are_skipped_with_a_reason(
    library: Library, photos: Path
) -> None:
    os.mkfifo(photos / "pipe.jpg")
    (photos / "zero.png").symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(photos / "sock.jpeg"))
    add_folders(library, [photos])
    report = ScanReport()
    # Opening the FIFO would wait for a writer for ever: the scan runs on a thread.
    scan = threading.Thread(target=lambda: list(scan_folders(library, CancelToken(), report)))
    scan.start()
    scan.join(timeout=60)
    try:
        assert not scan.is_alive(), "the scan opened the FIFO"
    finally:
        if scan.is_alive():
            with open(photos / "pipe.jpg", "wb"):  # let it go
                pass
        server.close()
    skipped = {os.path.basename(p): reason for p, reason in report.skipped}
    assert set(skipped) == {"pipe.jpg", "zero.png", "sock.jpeg"}
    assert "FIFO" in skipped["pipe.jpg"] and "socket" in skipped["sock.jpeg"]
    assert "device" in skipped["zero.png"]
    assert report.seen == len(_ids(library)) == 30


# -- photos listed without a model ----------------------------------------------------------


def test_photos_are_found_and_listed_without_a_model(library: Library, photos: Path) -> None:
    app = Clipdesk(library)
    app.add_folders([photos])
    list(app.scan())
    status = app.status()
    assert (status.photos, status.folders[0].photos, status.model) == (30, 30, None)
    assert len(app.browse()) == 30 and app.loaded_models() == []


def test_clipdesk_index_says_the_unplugged_folder_is_kept(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipdesk.cli.main import main
    from tests.helpers import TINY_CONFIG, TINY_SPEC

    lib = str(tmp_path / "lib")
    assert main(["--library", lib, "add", str(photos)]) == 0
    model = ["--model", TINY_SPEC, "--model-config", str(TINY_CONFIG), "--device", "cpu"]
    assert main(["--library", lib, "index", *model]) == 0
    capsys.readouterr()
    _unmount(photos, tmp_path / "usb")
    assert main(["--library", lib, "index"]) == 0
    out, err = capsys.readouterr()
    assert "0 removed" in out and "30 of 30 photos indexed" in out
    assert f"{photos}: folder is missing or not mounted" in err
    assert f"kept (to forget them: clipdesk remove {photos})" in err


def test_a_renamed_subfolder_with_a_deletion_is_tidied_not_taken_for_unplugged(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    """Review: renaming the only subfolder, deleting one photo and adding one froze the
    folder as 'missing or not mounted' for good."""
    only = photos / "only"
    only.mkdir()
    for sub in [p for p in photos.iterdir() if p.is_dir() and p != only]:
        for f in sub.iterdir():
            f.rename(only / f.name)
        sub.rmdir()
    _indexed_and_tagged(app, photos, tiny_spec)
    ids = _ids(app.library)
    (photos / "only").rename(photos / "renamed")
    deleted = sorted((photos / "renamed").iterdir())[0]
    deleted.unlink()
    shutil.copy(sorted((photos / "renamed").iterdir())[0], photos / "renamed" / "new.jpg")
    report = ScanReport()
    list(app.index(report=report))
    assert report.unavailable == [] and report.removed == 1 and report.moved == 29
    after = _ids(app.library)
    assert len(after) == 30 and str(photos / "renamed" / "new.jpg") in after
    kept = {path: ids[str(only / Path(path).name)] for path in after if "new.jpg" not in path}
    assert all(after[path] == photo_id for path, photo_id in kept.items())


def test_a_photo_that_vanished_mid_index_is_searchable_again_once_back(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    """Review: a photo marked vanished left the graph; read again on the same row, it
    stayed out of every search (a graph never takes a deleted label back)."""
    _indexed_and_tagged(app, photos, tiny_spec)
    victim = str(sorted(photos.rglob("*.jpg"))[0])
    with app.library.session() as s:  # as the pipeline records a drive pulled out
        s.execute(
            update(db.Photo)
            .where(db.Photo.path == victim)
            .values(error="file vanished before it could be read")
        )
        s.commit()
    assert victim not in {h.path for h in app.search_text("a photo", k=30)}  # graph catches up
    list(app.index())  # the drive is back: read again
    found = {h.path for h in app.search_text("a photo", k=30)}
    assert victim in found and len(found) == 30


def test_a_folder_renumbered_by_its_file_system_is_not_called_missing(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    """Review: btrfs, NFS and FUSE number a mount anew; search then said 'not searched'
    while it showed the folder's photos. The scan's own test decides now."""
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    with app.library.session() as s:
        s.execute(update(db.Root).values(device=123456789))  # as after a re-mount
        s.commit()
    assert app.unavailable_folders() == []
    assert app.status().folders[0].available
    _unmount(photos, tmp_path / "aside")  # now really another drive, without the photos
    assert [reason for _, reason in app.unavailable_folders()] == [OTHER_DEVICE]
