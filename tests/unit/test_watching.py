"""Folder watching: bursts of changes become one call after a quiet spell."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from clipdesk.indexing.watching import FolderWatcher
from tests.helpers import fixture_photo_paths


def _collect(quiet_s: float) -> tuple[FolderWatcher, list[set[str]], threading.Event]:
    calls: list[set[str]] = []
    called = threading.Event()

    def on_change(paths: set[str]) -> None:
        calls.append(paths)
        called.set()

    return FolderWatcher(on_change, quiet_s=quiet_s), calls, called


def test_a_burst_of_new_photos_is_reported_once(tmp_path: Path) -> None:
    watcher, calls, called = _collect(quiet_s=0.5)
    watcher.start([str(tmp_path)])
    try:
        photos = fixture_photo_paths()[:6]
        for photo in photos:
            shutil.copy(photo, tmp_path / photo.name)
        (tmp_path / "notes.txt").write_text("not a photo")
        assert called.wait(10)
        time.sleep(1.0)  # nothing more comes after the burst
        assert len(calls) == 1
        assert {Path(p).name for p in calls[0]} >= {p.name for p in photos}
        assert not any(p.endswith("notes.txt") for p in calls[0])
    finally:
        watcher.stop()


def test_renames_deletions_and_new_subfolders_are_seen(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    shutil.copy(fixture_photo_paths()[0], photo)
    watcher, calls, called = _collect(quiet_s=0.3)
    watcher.start([str(tmp_path)])
    try:
        photo.rename(tmp_path / "b.jpg")
        assert called.wait(10)
        assert any(p.endswith("b.jpg") for p in calls[-1])
        called.clear()
        (tmp_path / "b.jpg").unlink()
        assert called.wait(10)
        called.clear()
        sub = tmp_path / "trip"
        sub.mkdir()
        shutil.copy(fixture_photo_paths()[1], sub / "c.jpg")
        assert called.wait(10)
        assert any(p.endswith("c.jpg") or p.endswith("trip") for p in calls[-1])
        called.clear()
        hidden = tmp_path / ".thumbnails"
        hidden.mkdir()
        (hidden / "x.jpg").write_bytes(b"...")
        assert not called.wait(1.5)  # hidden folders are ignored, as the scan ignores them
    finally:
        watcher.stop()


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    watcher, _, _ = _collect(quiet_s=0.3)
    watcher.start([str(tmp_path / "unplugged"), str(tmp_path)])
    try:
        assert watcher.folders == [str(tmp_path)]
        assert watcher.problems and "not found" in watcher.problems[0][1]
    finally:
        watcher.stop()
    assert watcher._thread is None
