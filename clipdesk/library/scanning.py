"""Finding the user's photos: add/remove folders, and rescan them (mark and sweep).

Reads directory listings, file headers and a sample of each new file's bytes; writes
only to the library database.

Over 600 lines on purpose: one mark-and-sweep pass and the cases that keep a library whole
(an unplugged drive, a renumbered mount, moves and copies keeping their tags, the camera
models of photos scanned before schema 4) belong together, since each changes what the
sweep may delete.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import Row, delete, func, select, text, update
from sqlalchemy.orm import Session

from clipdesk.errors import ClipdeskError
from clipdesk.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    fingerprint,
    is_image_name,
    read_header,
)
from clipdesk.library import Library, db
from clipdesk.library.queries import in_chunks
from clipdesk.progress import CancelToken, Progress, RateMeter

_FLUSH_EVERY = 256  # files per transaction while scanning
# A photo's row as a scan reads it: path, id, folder id, size, mtime_ns, error.
_ScanRow = Row[str, int, int, int, int, str | None]
_PROBE_KNOWN = 32  # photos looked for in a library folder now on another device

MISSING = "folder is missing or not mounted"
OTHER_DEVICE = "folder is missing or not mounted: another drive is at its path, without its photos"
ALL_GONE = "folder is missing or not mounted? none of its {count} photos is there any more"


@dataclass
class ScanReport:
    """What the last scan found.

    ``problems`` are folders it could not read; ``unavailable`` the library folders it
    left as they were (missing, not mounted, every photo gone at once: nothing of them
    was forgotten), also listed in ``problems``; ``skipped`` files with a photo's name
    that are not files (a FIFO, a socket, a device). ``moved``: photos renamed or moved,
    which keep their id, vector and tags.
    """

    seen: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    moved: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


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
            new_root = db.Root(path=folder, added_at=time.time(), device=os.stat(folder).st_dev)
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


def folder_unavailable(root: db.Root, library: Library) -> str | None:
    """Why a library folder's photos cannot be shown now (None: they can): missing now, or
    another drive at its path without its photos (the scan's own test, so a drive that a
    file system numbers anew at each mount is not taken for another), or as the last scan
    found it."""

    def known_photos() -> list[tuple[str, int]]:
        with library.session() as s:
            rows = s.execute(
                select(db.Photo.path, db.Photo.size).where(db.Photo.root_id == root.id)
            ).all()
        return [(path, size) for path, size in rows]

    device, reason = _root_device(root, known_photos)
    return reason if device is None else root.unavailable


def unavailable_folders(library: Library) -> list[tuple[str, str]]:
    """Library folders whose photos cannot be shown now (path, why): kept, not shown."""
    return [
        (root.path, reason)
        for root in library.roots()
        if (reason := folder_unavailable(root, library)) is not None
    ]


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


def _not_a_file(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    return "not a regular file"


def walk_images(
    folder: str,
    problems: list[tuple[str, str]],
    exclude: frozenset[str] = frozenset(),
    skipped: list[tuple[str, str]] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (path, stat) of image files under ``folder``, following folder symlinks.

    Hidden files and folders are skipped; a folder reached twice (symlink loop) is
    visited once; unreadable folders are reported in ``problems`` and skipped. A photo's
    name on something that is not a file (a FIFO, a socket, a link to a device) is noted
    in ``skipped`` and never opened (opening a FIFO waits for a writer, for ever).
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
                    elif skipped is not None:
                        skipped.append((entry.path, _not_a_file(entry_stat.st_mode)))
            except OSError:  # a dangling symlink, or a file gone mid-listing
                continue
        stack.extend(sorted(subfolders, reverse=True))


def _describe_new_file(root_id: int, path: str, st: os.stat_result, max_pixels: int) -> db.Photo:
    error = None
    width = height = None
    taken = None
    camera = None
    try:
        digest = fingerprint(path, st.st_size)
    except OSError as exc:
        digest = ""
        if isinstance(exc, PermissionError):
            error = PERMISSION_DENIED
        elif isinstance(exc, FileNotFoundError):
            error = VANISHED
        else:
            error = f"cannot read file: {exc.strerror or exc}"
    if error is None:
        try:
            header = read_header(path, max_pixels)
            width, height, taken = header.width, header.height, header.taken_at
            camera = header.camera
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
        camera=camera,
        error=error,
    )


def _fingerprints(s: Session, ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in in_chunks(ids):
        rows = s.execute(select(db.Photo.id, db.Photo.fingerprint).where(db.Photo.id.in_(chunk)))
        found.update((photo_id, digest) for photo_id, digest in rows)
    return found


def _facts_of(photo: db.Photo) -> dict[str, object]:
    """What a scan reads of a file, as column values (for an update of its row)."""
    return {
        "size": photo.size,
        "mtime_ns": photo.mtime_ns,
        "width": photo.width,
        "height": photo.height,
        "taken_at": photo.taken_at,
        "taken_from_exif": photo.taken_from_exif,
        "camera": photo.camera,
        "error": photo.error,
    }


# Failures that say nothing about the file's content; worth another look once the
# reason may be gone, though the file's size and mtime are the same.
PERMISSION_DENIED = "permission denied: clipdesk cannot read this file"
VANISHED = "file vanished before it could be read"  # as clipdesk.imaging says it


def _retry_failed(path: str, error: str) -> bool:
    """Whether a file that failed, unchanged since (same size and mtime), is read again.

    A broken file stays broken until it changes; but a file that vanished (a drive
    unplugged while indexing) is there again, and a permission can be granted (chmod
    changes neither size nor mtime): checked without opening the file.
    """
    if error == VANISHED:
        return True
    return error == PERMISSION_DENIED and os.access(path, os.R_OK)


def _collect_unused_vectors(s: Session) -> None:
    s.execute(
        delete(db.Embedding).where(
            db.Embedding.fingerprint.not_in(select(db.Photo.fingerprint).distinct())
        )
    )


def forget_photos(library: Library, photo_ids: Sequence[int]) -> None:
    """Forget photos whose files the user removed through clipdesk (moved to the trash)
    as a scan's sweep forgets vanished files: their rows (tags with them) and the vectors
    no other photo shares."""
    with library.session() as s:
        _delete_ids(s, list(photo_ids))
        s.flush()
        _collect_unused_vectors(s)
        s.commit()


def _delete_ids(s: Session, ids: list[int]) -> None:
    for chunk in in_chunks(ids):
        s.execute(delete(db.Photo).where(db.Photo.id.in_(chunk)))


def _photos_of(rows: Sequence[_ScanRow], root_id: int) -> list[tuple[str, int]]:
    return [(row[0], row[3]) for row in rows if row[2] == root_id]


def _root_device(
    root: db.Root, known_photos: Callable[[], list[tuple[str, int]]]
) -> tuple[int | None, str | None]:
    """The device of a library folder now, or None and why it is to be left alone: it is
    missing, or another drive is at its path (``known_photos``: its photos' paths and
    sizes, asked for only then)."""
    try:
        st = os.stat(root.path)
    except OSError:
        return None, MISSING
    if not stat.S_ISDIR(st.st_mode):
        return None, MISSING
    if root.device is None or st.st_dev == root.device:
        return st.st_dev, None
    known = known_photos()
    if not known:  # nothing to lose
        return st.st_dev, None
    # Another device: a drive mounted elsewhere now, or re-plugged with another number
    # (FUSE, btrfs and NFS number theirs at each mount). Its photos say which.
    step = max(len(known) // _PROBE_KNOWN, 1)
    for path, size in known[::step][:_PROBE_KNOWN]:
        try:
            found = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(found.st_mode) and found.st_size == size:
            return st.st_dev, None
    return None, OTHER_DEVICE


def _all_found_elsewhere(s: Session, root_id: int, newest_before: int) -> bool:
    """Whether every photo the folder had is found again, by content, among the files
    this scan added (the folder's photos were renamed or moved, not lost)."""
    lost = s.execute(
        text(
            "SELECT 1 FROM photos AS o WHERE o.root_id = :root AND o.id <= :newest AND NOT "
            "EXISTS (SELECT 1 FROM photos AS m WHERE m.fingerprint = o.fingerprint "
            "AND m.id > :newest AND m.fingerprint != '') LIMIT 1"
        ),
        {"root": root_id, "newest": newest_before},
    ).first()
    return lost is None


_MOVED_COLUMNS = (
    db.Photo.root_id,
    db.Photo.path,
    db.Photo.size,
    db.Photo.mtime_ns,
    db.Photo.width,
    db.Photo.height,
    db.Photo.taken_at,
    db.Photo.taken_from_exif,
    db.Photo.camera,
    db.Photo.error,
)


def _keep_moved(s: Session, gone: list[int], newest_before: int) -> tuple[list[int], int]:
    """Photos that vanished from one path and appeared at another (renamed, moved) keep
    their row: its id, and with it their tags and their place in the vector index.

    Returns the ids still to sweep, and how many photos moved. A vanished photo takes
    the place of a new file with the same content found in this scan; failing that, its
    tags go to an older, untagged file with that content (a move seen by a scan that
    was stopped before its sweep).
    """
    by_content: dict[str, list[int]] = {}
    for ids in in_chunks(gone):
        for pid, digest in s.execute(
            select(db.Photo.id, db.Photo.fingerprint).where(
                db.Photo.id.in_(ids), db.Photo.fingerprint != ""
            )
        ):
            by_content.setdefault(digest, []).append(pid)
    if not by_content:
        return gone, 0
    gone_set = set(gone)
    alive: dict[str, list[int]] = {}
    digests = sorted(by_content)
    for some in in_chunks(digests):
        for pid, digest in s.execute(
            select(db.Photo.id, db.Photo.fingerprint)
            .where(db.Photo.fingerprint.in_(some))
            .order_by(db.Photo.id)
        ):
            if pid not in gone_set:
                alive.setdefault(digest, []).append(pid)
    pairs: list[tuple[int, int]] = []  # (vanished, new) of the same content
    heirs: dict[int, list[int]] = {}  # older file -> vanished photos whose tags it gets
    for digest, vanished in by_content.items():
        others = alive.get(digest, [])
        new = [pid for pid in others if pid > newest_before]
        pairs += zip(sorted(vanished), new, strict=False)
        rest = sorted(vanished)[len(new) :]
        older = [pid for pid in others if pid <= newest_before]
        if rest and older:
            tagged = set(
                s.scalars(select(db.PhotoTag.photo_id).where(db.PhotoTag.photo_id.in_(older)))
            )
            untagged = [pid for pid in older if pid not in tagged]
            if untagged:
                heirs[untagged[0]] = rest
    if pairs:
        new_ids = [new for _, new in pairs]
        values: dict[int, dict[str, object]] = {}
        for chunk in in_chunks(new_ids):
            for row in s.execute(
                select(db.Photo.id, *_MOVED_COLUMNS).where(db.Photo.id.in_(chunk))
            ):
                fields = dict(row._mapping)
                values[int(fields.pop("id"))] = fields
        _delete_ids(s, new_ids)  # first: the path is unique
        s.flush()
        s.execute(update(db.Photo), [{"id": old, **values[new]} for old, new in pairs])
    for heir, vanished in heirs.items():
        s.execute(
            text(
                "UPDATE OR IGNORE photo_tags SET photo_id = :heir "
                f"WHERE photo_id IN ({', '.join(str(int(pid)) for pid in vanished)})"
            ),
            {"heir": heir},
        )
    kept = {old for old, _ in pairs}
    return [pid for pid in gone if pid not in kept], len(pairs)


def _read_cameras(
    library: Library, cancel: CancelToken, max_pixels: int, left_alone: set[int]
) -> Iterator[Progress]:
    """Give photos scanned before cameras were recorded (``camera`` NULL) their camera
    model: a header read each, in batches, nothing else about the photo changes (its
    vector and tags stay). A file that cannot be read now keeps NULL, for the next scan."""
    with library.session() as s:
        rows = s.execute(
            select(db.Photo.id, db.Photo.path).where(
                db.Photo.camera.is_(None),
                db.Photo.error.is_(None),
                db.Photo.root_id.not_in(left_alone),
            )
        ).all()
    if not rows:
        return
    meter = RateMeter(total=len(rows))
    for start in range(0, len(rows), _FLUSH_EVERY):
        values = []
        for photo_id, path in rows[start : start + _FLUSH_EVERY]:
            try:
                values.append({"id": photo_id, "camera": read_header(path, max_pixels).camera})
            except ImageRejected:
                continue
        if values:
            with library.session() as s:
                s.execute(update(db.Photo), values)
                s.commit()
        done = min(start + _FLUSH_EVERY, len(rows))
        yield meter.report("scan", done, message="reading camera models")
        if cancel.cancelled:
            return


def scan_folders(
    library: Library,
    cancel: CancelToken | None = None,
    report: ScanReport | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Progress]:
    """Bring the photo table in line with the folders on disk.

    Unchanged files (same size and mtime) cost one ``stat``; new and changed ones are
    fingerprinted and their headers read (a file that failed is read again only once it
    changed). Files that disappeared are swept at the end, except under folders that
    could not be read, and except in a library folder that is missing, on another drive
    than its photos, or where every photo vanished at once: an unplugged drive loses
    nothing, even when the folder is its mount point (``remove_folder`` forgets a
    folder on purpose). A renamed or moved photo keeps its row, tags included. Photos
    recorded before camera models were (schema 4) get theirs, a header read each.
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
        # Ids are never reused (AUTOINCREMENT): rows above this one are this scan's.
        newest_before = int(s.scalar(select(func.max(db.Photo.id))) or 0)
    known = {row[0]: row for row in rows}
    known_in_root = Counter(row[2] for row in rows)
    seen_in_root: Counter[int] = Counter()  # photo files found in each folder
    keep: set[int] = set()
    batch: list[tuple[int, str, os.stat_result, int | None]] = []
    meter = RateMeter(total=len(known))
    devices: dict[int, int] = {}  # the folders walked, and their devices now
    left_alone: dict[int, str] = {}  # folders left as they were, and why

    def flush() -> None:
        described = [(_describe_new_file(rid, p, st, max_pixels), old) for rid, p, st, old in batch]
        with library.session() as s:
            before = _fingerprints(s, [old for _, old in described if old is not None])
            replaced: list[int] = []
            for photo, old in described:
                if old is None:
                    s.add(photo)
                elif (
                    photo.fingerprint
                    and before.get(old) == photo.fingerprint
                    and photo.error is None
                    and known[photo.path][5] is None
                ):
                    # The same content with another date or size on record (touched, copied
                    # back from a backup): the row stays, and with it the photo's tags. Only
                    # while it stays searchable: a graph never takes back a label it marked
                    # deleted (a failed photo that reads now gets a new row).
                    s.execute(update(db.Photo).where(db.Photo.id == old).values(_facts_of(photo)))
                else:
                    replaced.append(old)
            _delete_ids(s, replaced)
            s.flush()
            s.add_all(photo for photo, old in described if old in replaced)
            s.commit()
        batch.clear()

    exclude = frozenset({normalise_folder(library.directory)})
    for root in roots:
        device, reason = _root_device(root, partial(_photos_of, rows, root.id))
        if device is None:
            left_alone[root.id] = reason or MISSING
            continue
        devices[root.id] = device
        for path, st in walk_images(root.path, report.problems, exclude, report.skipped):
            report.seen += 1
            seen_in_root[root.id] += 1
            row = known.get(path)
            if (
                row is not None
                and row[3] == st.st_size
                and row[4] == st.st_mtime_ns
                and (row[5] is None or not _retry_failed(path, row[5]))
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

    unreadable = {p for p, _ in report.problems}
    with library.session() as s:
        # A folder with no photo file left, none of its photos found elsewhere, is taken
        # for a drive not mounted (its mount point left empty), not for a mass deletion:
        # left as it was. A folder that still holds photos (a subfolder renamed, some
        # deleted) is tidied as usual. Undone roots' files no longer count as found
        # elsewhere, hence the loop.
        suspects = [
            root
            for root in roots
            if root.id in devices
            and known_in_root[root.id]
            and not seen_in_root[root.id]
            and not any(_is_under(bad, root.path) for bad in unreadable)  # cannot tell
        ]
        undone = True
        while undone:
            undone = False
            for root in list(suspects):
                if _all_found_elsewhere(s, root.id, newest_before):
                    continue
                suspects.remove(root)
                added = select(db.Photo.id).where(
                    db.Photo.root_id == root.id, db.Photo.id > newest_before
                )
                report.new -= len(s.scalars(added).all())
                s.execute(delete(db.Photo).where(db.Photo.id.in_(added)))
                s.flush()
                del devices[root.id]
                left_alone[root.id] = ALL_GONE.format(count=known_in_root[root.id])
                undone = True
        for root in roots:
            if root.id in left_alone:
                report.unavailable.append((root.path, left_alone[root.id]))
                report.problems.append((root.path, left_alone[root.id]))
        protected = [p for p, _ in report.problems]
        gone = [
            row[1]
            for path, row in known.items()
            if row[1] not in keep
            and row[2] not in left_alone
            and not any(_is_under(path, bad) for bad in protected)
        ]
        gone, moved = _keep_moved(s, gone, newest_before)
        _delete_ids(s, gone)
        s.flush()
        _collect_unused_vectors(s)
        for root in roots:
            # the device is recorded (or, for folders added before it was, first learnt)
            # only where the folder's photos were found
            if root.id in left_alone:
                values: dict[str, object] = {"unavailable": left_alone[root.id]}
            elif root.path in unreadable:
                continue
            else:
                values = {"unavailable": None, "device": devices[root.id]}
            s.execute(update(db.Root).where(db.Root.id == root.id).values(**values))
        s.commit()
    report.moved = moved
    report.new -= moved
    report.removed = len(gone)
    yield from _read_cameras(library, cancel, max_pixels, set(left_alone))
    if cancel.cancelled:
        return
    meter.total = report.seen
    yield meter.report("scan", report.seen, message="scan complete")
