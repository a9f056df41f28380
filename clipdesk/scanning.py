"""Finding the user's photos: add/remove folders, and rescan them (mark and sweep).

Reads directory listings, file headers and a sample of each new file's bytes; writes
only to the library database.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from clipdesk import db
from clipdesk.errors import ClipdeskError
from clipdesk.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    fingerprint,
    is_image_name,
    read_header,
)
from clipdesk.library import Library
from clipdesk.progress import CancelToken, Progress, RateMeter

_FLUSH_EVERY = 256  # files per transaction while scanning
_IN_CHUNK = 500  # ids per "IN (...)" statement, well under SQLite's variable limit


@dataclass
class ScanReport:
    """What the last scan found; ``problems`` are folders it could not read."""

    seen: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def normalise_folder(path: str | Path) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def add_folders(library: Library, folders: list[str | Path]) -> list[str]:
    """Register folders to watch; returns messages, one per folder."""
    messages = []
    with library.session() as s:
        roots = list(s.scalars(select(db.Root)))
        for raw in folders:
            folder = normalise_folder(raw)
            if not os.path.isdir(folder):
                raise ClipdeskError(f"not a folder: {raw}")
            if not os.access(folder, os.R_OK | os.X_OK):
                raise ClipdeskError(f"cannot read folder: {raw} (permission denied)")
            if _is_under(folder, normalise_folder(library.directory)):
                raise ClipdeskError("the library folder itself cannot be added as a photo folder")
            parent = next((r for r in roots if _is_under(folder, r.path)), None)
            if parent is not None:
                messages.append(f"already in the library (inside {parent.path}): {folder}")
                continue
            new_root = db.Root(path=folder, added_at=time.time())
            s.add(new_root)
            s.flush()
            # A folder that contains existing roots absorbs them, keeping their photos.
            for child in [r for r in roots if _is_under(r.path, folder)]:
                s.execute(
                    update(db.Photo).where(db.Photo.root_id == child.id).values(root_id=new_root.id)
                )
                s.delete(child)
                roots.remove(child)
                messages.append(f"merged {child.path} into {folder}")
            roots.append(new_root)
            messages.append(f"added {folder}")
        s.commit()
    return messages


def remove_folder(library: Library, folder: str | Path) -> int:
    """Forget a folder and its photos (the files themselves are not touched)."""
    target = normalise_folder(folder)
    with library.session() as s:
        root = s.scalar(select(db.Root).where(db.Root.path == target))
        if root is None:
            known = ", ".join(r.path for r in s.scalars(select(db.Root))) or "none"
            raise ClipdeskError(f"not a library folder: {folder} (library folders: {known})")
        count = s.scalar(select(func.count()).where(db.Photo.root_id == root.id))
        s.delete(root)  # photos follow by ON DELETE CASCADE
        s.flush()
        _collect_unused_vectors(s)
        s.commit()
    return int(count or 0)


def walk_images(
    folder: str, problems: list[tuple[str, str]], exclude: frozenset[str] = frozenset()
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (path, stat) of image files under ``folder``, following folder symlinks.

    Hidden files and folders are skipped; a folder reached twice (symlink loop) is
    visited once; unreadable folders are reported in ``problems`` and skipped.
    """
    visited: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
            key = (st.st_dev, st.st_ino)
            if key in visited:
                continue
            visited.add(key)
            with os.scandir(current) as entries:
                listing = list(entries)
        except OSError as exc:
            problems.append((current, exc.strerror or str(exc)))
            continue
        subfolders = []
        for entry in listing:
            if entry.name.startswith(".") or entry.path in exclude:
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    subfolders.append(entry.path)
                elif is_image_name(entry.name):
                    entry_stat = entry.stat(follow_symlinks=True)
                    if stat.S_ISREG(entry_stat.st_mode):
                        yield entry.path, entry_stat
            except OSError:  # a dangling symlink, or a file gone mid-listing
                continue
        stack.extend(sorted(subfolders, reverse=True))


def _describe_new_file(root_id: int, path: str, st: os.stat_result, max_pixels: int) -> db.Photo:
    error = None
    width = height = None
    taken = None
    try:
        digest = fingerprint(path, st.st_size)
    except OSError as exc:
        digest = ""
        error = (
            "permission denied: clipdesk cannot read this file"
            if isinstance(exc, PermissionError)
            else f"cannot read file: {exc.strerror or exc}"
        )
    if error is None:
        try:
            header = read_header(path, max_pixels)
            width, height, taken = header.width, header.height, header.taken_at
        except ImageRejected as exc:
            error = str(exc)
    return db.Photo(
        root_id=root_id,
        path=path,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        fingerprint=digest,
        width=width,
        height=height,
        taken_at=taken if taken is not None else st.st_mtime,
        taken_from_exif=taken is not None,
        error=error,
    )


def _collect_unused_vectors(s: Session) -> None:
    s.execute(
        delete(db.Embedding).where(
            db.Embedding.fingerprint.not_in(select(db.Photo.fingerprint).distinct())
        )
    )


def _delete_ids(s: Session, ids: list[int]) -> None:
    for start in range(0, len(ids), _IN_CHUNK):
        s.execute(delete(db.Photo).where(db.Photo.id.in_(ids[start : start + _IN_CHUNK])))


def scan_folders(
    library: Library,
    cancel: CancelToken | None = None,
    report: ScanReport | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Progress]:
    """Bring the photo table in line with the folders on disk.

    Unchanged files (same size and mtime) cost one ``stat``; new and changed ones are
    fingerprinted and their headers read. Files that disappeared are swept at the end,
    except under folders that could not be read (an unplugged drive loses nothing).
    """
    cancel = cancel or CancelToken()
    report = report if report is not None else ScanReport()
    with library.session() as s:
        roots = list(s.scalars(select(db.Root)))
        rows = s.execute(
            select(
                db.Photo.path,
                db.Photo.id,
                db.Photo.root_id,
                db.Photo.size,
                db.Photo.mtime_ns,
                db.Photo.error,
            )
        ).all()
    known = {row[0]: row for row in rows}
    keep: set[int] = set()
    batch: list[tuple[int, str, os.stat_result, int | None]] = []
    meter = RateMeter(total=len(known))

    def flush() -> None:
        with library.session() as s:
            replaced = [old for *_, old in batch if old is not None]
            _delete_ids(s, replaced)
            s.flush()
            s.add_all(_describe_new_file(rid, p, st, max_pixels) for rid, p, st, _ in batch)
            s.commit()
        batch.clear()

    for root in roots:
        if not os.path.isdir(root.path):
            report.problems.append((root.path, "folder is missing or not mounted"))
            continue
        exclude = frozenset({normalise_folder(library.directory)})
        for path, st in walk_images(root.path, report.problems, exclude):
            report.seen += 1
            row = known.get(path)
            if (
                row is not None
                and row[3] == st.st_size
                and row[4] == st.st_mtime_ns
                and row[5] is None
            ):
                keep.add(row[1])
            else:
                if row is None:
                    report.new += 1
                else:
                    report.changed += 1
                    keep.add(row[1])  # replaced in flush, not swept
                batch.append((root.id, path, st, row[1] if row else None))
                if len(batch) >= _FLUSH_EVERY:
                    flush()
                    meter.total = max(meter.total, report.seen)
                    yield meter.report("scan", report.seen, message="scanning folders")
                    if cancel.cancelled:
                        return
    flush()
    if cancel.cancelled:
        return

    unavailable = [p for p, _ in report.problems]
    gone = [
        row[1]
        for path, row in known.items()
        if row[1] not in keep and not any(_is_under(path, bad) for bad in unavailable)
    ]
    with library.session() as s:
        _delete_ids(s, gone)
        s.flush()
        _collect_unused_vectors(s)
        s.commit()
    report.removed = len(gone)
    meter.total = report.seen
    yield meter.report("scan", report.seen, message="scan complete")
