"""Moving photos the user chose to the system trash (never a delete), the library
forgetting them as it forgets files deleted on disk, and the list of what went where.

The list is kept in the library's settings (``trash_log``: JSON, appended to), so that a
photo trashed by mistake can be found and put back from the trash.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import select

from clipdesk.library import Library, db
from clipdesk.library.queries import in_chunks
from clipdesk.library.scanning import forget_photos
from clipdesk.progress import CancelToken

TRASH_LOG_SETTING = "trash_log"


@dataclass(frozen=True)
class Trashed:
    """A photo moved to the trash: where it was, when, and where it went (None: the
    system's trash, at a place the system does not tell)."""

    path: str
    trashed_at: float
    trash_path: str | None
    size: int
    photo_id: int

    @property
    def restored(self) -> bool:
        """A file is at the photo's place again (put back from the trash, most likely)."""
        return os.path.lexists(self.path)

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "restored": self.restored}


@dataclass
class TrashReport:
    trashed: list[Trashed] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why), left as it was


def trash_log(library: Library) -> list[Trashed]:
    """Every photo clipdesk moved to the trash, oldest first."""
    raw = library.get_setting(TRASH_LOG_SETTING)
    if not raw:
        return []
    try:
        entries = json.loads(raw)
    except ValueError:
        return []
    fields = {"path", "trashed_at", "trash_path", "size", "photo_id"}
    return [
        Trashed(**{k: v for k, v in entry.items() if k in fields})
        for entry in entries
        if isinstance(entry, dict)
    ]


def trash_photos(
    library: Library, photo_ids: Sequence[int], cancel: CancelToken | None = None
) -> TrashReport:
    """Move the photos' files to the system trash, each one checked first to be the file
    the library knows (same size and time: a file changed since is not what the user
    looked at); a file that cannot be trashed (a read-only folder, a trash that fails) is
    reported and left, the rest go on. The library then forgets the trashed photos and
    notes them in the trash list. Holds the library's writer lock."""
    from send2trash import send2trash  # lazy: only a confirmed clean-up needs it

    cancel = cancel or CancelToken()
    report = TrashReport()
    with library.exclusive("indexing"):
        rows: list[tuple[int, str, int, int]] = []
        with library.session() as s:
            for chunk in in_chunks(sorted(set(photo_ids))):
                rows += s.execute(
                    select(db.Photo.id, db.Photo.path, db.Photo.size, db.Photo.mtime_ns).where(
                        db.Photo.id.in_(chunk)
                    )
                ).all()
        known = {row[0] for row in rows}
        report.failed += [(f"photo {i}", "not in the library") for i in photo_ids if i not in known]
        gone: list[int] = []
        try:
            for photo_id, path, size, mtime_ns in rows:
                if cancel.cancelled:
                    break
                why = _unchanged(path, size, mtime_ns)
                if why is not None:
                    report.failed.append((path, why))
                    continue
                started = time.time()
                try:
                    send2trash(path)
                except OSError as exc:  # TrashPermissionError is one
                    report.failed.append((path, _words(exc)))
                    continue
                if os.path.lexists(path):
                    report.failed.append((path, "the trash did not take it"))
                    continue
                gone.append(photo_id)
                report.trashed.append(
                    Trashed(path, started, _where_trashed(path, started), size, photo_id)
                )
        finally:
            if gone:
                _note(library, report.trashed)
                forget_photos(library, gone)
    return report


def _unchanged(path: str, size: int, mtime_ns: int) -> str | None:
    """Why the file is not the photo the library knows (None: it is)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "the file is gone already"
    except OSError as exc:
        return _words(exc)
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        return "the file changed since it was scanned (run `clipdesk index`, then look again)"
    return None


def _words(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        return "permission denied (a read-only folder or drive?)"
    if exc.errno == errno.EROFS:
        return "the drive is read-only"
    return f"the system trash failed: {exc.strerror or exc or type(exc).__name__}"


def _note(library: Library, trashed: list[Trashed]) -> None:
    log = [asdict(t) for t in trash_log(library)]
    log += [asdict(t) for t in trashed]
    library.set_setting(TRASH_LOG_SETTING, json.dumps(log))


def _trash_dirs(path: str) -> list[Path]:
    """The freedesktop trash folders a file at ``path`` may have gone to: the home trash,
    and its drive's (``.Trash/UID``, ``.Trash-UID``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    found = [Path(data_home) / "Trash"]
    top = os.path.realpath(os.path.dirname(path))
    while not os.path.ismount(top) and top != os.path.dirname(top):
        top = os.path.dirname(top)
    uid = str(os.getuid()) if hasattr(os, "getuid") else ""
    found += [Path(top) / ".Trash" / uid, Path(top) / f".Trash-{uid}"]
    return found


def _where_trashed(path: str, since: float) -> str | None:
    """Where the freedesktop trash put ``path`` (read back from its ``.trashinfo``), or
    None on systems whose trash does not say (macOS, Windows)."""
    if sys.platform in ("darwin", "win32"):
        return None
    original = os.path.realpath(path)
    for trash in _trash_dirs(path):
        info = trash / "info"
        try:
            entries = list(os.scandir(info))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith(".trashinfo"):
                continue
            try:
                if entry.stat().st_mtime < since - 2:
                    continue
                text = Path(entry.path).read_text(encoding="utf-8", errors="surrogateescape")
            except OSError:
                continue
            line = next((x for x in text.splitlines() if x.startswith("Path=")), "")
            recorded = unquote(line[len("Path=") :], errors="surrogateescape")
            top = trash.parent.parent if trash.name.isdigit() else trash.parent
            if not os.path.isabs(recorded):
                recorded = os.path.join(top, recorded)
            if os.path.realpath(recorded) == original or recorded == path:
                stored = trash / "files" / entry.name[: -len(".trashinfo")]
                if os.path.lexists(stored):
                    return str(stored)
    return None
