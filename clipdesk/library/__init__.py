"""A library: one folder of app data holding the database, index files and caches.

The user's photo folders are only ever read; everything clipdesk writes lives here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import platformdirs
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, DBAPIError
from sqlalchemy.orm import Session

from clipdesk.errors import ClipdeskError, LibraryError, StorageError
from clipdesk.files import file_lock, folder_lock
from clipdesk.library import db

LIBRARY_ENV = "CLIPDESK_LIBRARY"
DB_NAME = "library.sqlite3"
log = logging.getLogger(__name__)

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
_SQLITE_MESSAGES = {
    "attempt to write a readonly database": _SQLITE_READONLY,
    "disk I/O error": _SQLITE_IOERR,
    "database disk image is malformed": _SQLITE_CORRUPT,
    "database or disk is full": _SQLITE_FULL,
    "unable to open database file": _SQLITE_CANTOPEN,
    "file is not a database": _SQLITE_NOTADB,
}


def default_library_dir() -> Path:
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("clipdesk", appauthor=False)) / "library"


class Library:
    """Opens (creating or upgrading as needed) the library in ``directory``."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_library_dir()
        self.writing = False  # this process holds the writer lock (see ``exclusive``)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(f"cannot create the library folder {self.directory}: {exc}") from exc
        # A folder nobody may write (a read-only mount, another user's library) still
        # answers searches; os.access also tells root about read-only mounts.
        self.read_only = not os.access(self.directory, os.W_OK) or (
            self.db_path.exists() and not os.access(self.db_path, os.W_OK)
        )
        self.read_only_reason: str | None = None  # why, when not the folder's permissions
        if self.read_only:
            self.engine = self._open_read_only()
            return
        try:
            self.index_dir.mkdir(exist_ok=True)
            self.cache_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, self.directory) or LibraryError(
                f"cannot create the library folder {self.directory}: {exc}"
            ) from exc
        # Under a lock, so that a database another process is creating right now (0 bytes
        # for a moment) is not mistaken for one that lost its contents.
        with folder_lock(self.directory):
            self._refuse_empty_database()
            creating = not self.db_path.exists()
            self.engine = db.open_engine(self.db_path)
            try:
                db.migrate(self.engine)
            except DatabaseError as exc:
                self.engine.dispose()
                if creating:  # ours and empty: not a library that lost its contents
                    with contextlib.suppress(OSError):
                        if self.db_path.stat().st_size == 0:
                            self.db_path.unlink()
                error = storage_error(exc, self.directory)
                if error is not None and not creating and _disk_full(self.directory):
                    # SQLite cannot even grow the WAL's index: read what is there.
                    self.engine = self._open_read_only()
                    self.read_only, self.read_only_reason = True, str(error)
                    return
                raise error or LibraryError(
                    f"the library database {self.db_path} cannot be opened: {exc.orig}"
                ) from exc

    def _refuse_empty_database(self) -> None:
        """A database file of 0 bytes was cut short (a copy, a full disk, a crash): SQLite
        would take it for a new, empty library and write over it."""
        with contextlib.suppress(OSError):
            if self.db_path.stat().st_size == 0:
                raise StorageError(
                    f"the library database {self.db_path} is empty (0 bytes): it was cut "
                    "short, e.g. by an interrupted copy or a full disk. clipdesk keeps the "
                    "file as it is and does not write over it. Restore library.sqlite3 from "
                    "a backup into that folder; to start a new, empty library instead, move "
                    "the empty file aside (your photos are not touched either way)."
                )

    def _open_read_only(self) -> Engine:
        if not self.db_path.is_file():
            raise StorageError(
                f"the library folder is read-only and holds no library yet: {self.directory}; "
                "choose a writable folder (--library) to start one"
            )
        self._refuse_empty_database()
        wal = self.db_path.with_name(DB_NAME + "-wal")
        wal_empty = not wal.exists() or wal.stat().st_size == 0
        for immutable in (False, True):
            engine = db.open_engine(self.db_path, read_only=True, immutable=immutable)
            try:
                with engine.connect() as conn:
                    version = db.schema_version(conn)
                break
            except DatabaseError as exc:
                engine.dispose()
                code = getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF
                # The WAL's index (-shm) cannot be made or grown here (read-only, full).
                no_index = code in (_SQLITE_CANTOPEN, _SQLITE_IOERR)
                if not immutable and no_index and wal_empty:
                    continue  # and there is no WAL to read: the database file is all
                if no_index:
                    raise StorageError(
                        f"{read_only_message(self.directory)}. Its last changes are still in "
                        f"{wal.name}, which SQLite cannot read without writing beside it: "
                        "make the folder writable once and run any clipdesk command"
                    ) from exc
                raise storage_error(exc, self.directory) or LibraryError(
                    f"the library database {self.db_path} cannot be opened: {exc.orig}"
                ) from exc
        if version > db.SCHEMA_VERSION:
            db.migrate(engine)  # says that a newer clipdesk wrote it
        if version < db.SCHEMA_VERSION:
            engine.dispose()
            raise StorageError(
                f"{read_only_message(self.directory)}. This clipdesk must first upgrade the "
                f"library's database (schema {version} to {db.SCHEMA_VERSION}), which needs "
                "it writable once"
            )
        log.info("the library in %s cannot be written: searching what is there", self.directory)
        return engine

    @property
    def db_path(self) -> Path:
        return self.directory / DB_NAME

    @property
    def index_dir(self) -> Path:
        return self.directory / "index"

    @property
    def cache_dir(self) -> Path:
        return self.directory / "cache"

    @property
    def models_dir(self) -> Path:
        return self.directory / "models"

    def session(self) -> Session:
        """A new session; use it on one thread and close it (``with lib.session() as s``)."""
        return Session(self.engine, expire_on_commit=False)

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.session() as s:
            row = s.get(db.Setting, key)
            return row.value if row else default

    def note_setting(self, key: str, value: str | None) -> None:
        """Set a setting that only informs (what device ran, for ``status``): skipped when
        the library cannot be written (read-only, full disk) instead of failing a search."""
        if self.read_only:
            return
        try:
            self.set_setting(key, value)
        except (OSError, DBAPIError) as exc:
            if storage_error(exc, self.directory) is None:
                raise
            log.info("could not note %s: %s", key, exc)

    def set_setting(self, key: str, value: str | None) -> None:
        with self.session() as s:
            row = s.get(db.Setting, key)
            if value is None:
                if row:
                    s.delete(row)
            elif row:
                row.value = value
            else:
                s.add(db.Setting(key=key, value=value))
            s.commit()

    def roots(self) -> list[db.Root]:
        with self.session() as s:
            return list(s.scalars(select(db.Root).order_by(db.Root.path)))

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold the library's writer lock (one indexer at a time, across processes)."""
        busy = ClipdeskError(
            f"another clipdesk process is already {what} this library ({self.directory})"
        )
        if self.read_only:
            raise StorageError(self.read_only_reason or read_only_message(self.directory, what))
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.directory / "writer.lock", busy))
            except OSError as exc:
                error = storage_error(exc, self.directory)
                if error is None:
                    raise
                raise error from exc
            self.writing = True
            try:
                yield
            finally:
                self.writing = False


def read_only_message(folder: Path, what: str | None = None) -> str:
    needs = f"{what} needs it writable" if what else "to index, tag or change the library"
    return (
        f"the library folder is read-only: {folder}. Nothing is damaged and searches work "
        f"from what is there; {needs}: make the folder writable, or copy it to a writable "
        "place and pass --library"
    )


def _free_mb(folder: Path) -> int:
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free // 2**20
    return 0


def _disk_full(folder: Path) -> bool:
    """Whether the disk holding ``folder`` has not one block left for this user."""
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            stat = os.statvfs(candidate)
            return stat.f_bavail * stat.f_frsize < stat.f_bsize
    return False


def storage_error(exc: BaseException, directory: Path | str | None = None) -> StorageError | None:
    """The user's words for a storage failure of the library in ``directory`` (a full
    disk, a read-only or vanished folder, a damaged database), or None when ``exc`` is
    something else (a bug, which should keep its traceback)."""
    if isinstance(exc, StorageError):
        return exc
    folder = Path(directory).expanduser() if directory else default_library_dir()
    cause: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(cause, "sqlite_errorcode", None)  # Python 3.11+; else the message
    sqlite = code & 0xFF if isinstance(code, int) else _SQLITE_MESSAGES.get(str(cause))
    err = cause.errno if isinstance(cause, OSError) else None
    failed = str(cause)
    if not (folder / DB_NAME).is_file() and (
        err in (errno.ENOENT, errno.ESTALE, errno.ENODEV, errno.EIO)
        or sqlite in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR)
    ):
        return StorageError(
            f"the library folder vanished: {folder} was deleted, moved or its drive was "
            "unplugged while clipdesk was running. Your photos were not touched; put the "
            "folder back (or plug its drive in) and run again"
        )
    if (
        err in (errno.ENOSPC, errno.EDQUOT)
        or sqlite == _SQLITE_FULL
        # SQLite says "disk I/O error" or "read-only" when it cannot grow the WAL's index.
        or (sqlite in (_SQLITE_IOERR, _SQLITE_READONLY, _SQLITE_CANTOPEN) and _disk_full(folder))
    ):
        return StorageError(
            f"the disk holding the library is full ({_free_mb(folder)} MB free at {folder}): "
            "free space and run again; nothing was lost"
        )
    filename = getattr(cause, "filename", None)
    inside = isinstance(filename, str) and Path(filename).is_relative_to(folder)
    if (
        err == errno.EROFS
        or sqlite == _SQLITE_READONLY
        or (err in (errno.EACCES, errno.EPERM) and inside)
    ):
        return StorageError(read_only_message(folder))
    if sqlite in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StorageError(
            f"the library database {folder / DB_NAME} cannot be opened: it is "
            f"damaged ({failed}). clipdesk keeps "
            "the file as it is: restore library.sqlite3 from a backup, or move it aside to "
            "start a new library (your photos are not touched; `sqlite3 library.sqlite3 "
            ".recover` may save most of it)"
        )
    if err == errno.EIO or sqlite == _SQLITE_IOERR:
        return StorageError(
            f"the disk holding the library reports read/write errors ({failed}) at {folder}: "
            "check the drive; what was committed before is kept"
        )
    return None
