"""A library: one folder of app data holding the database, index files and caches.

The user's photo folders are only ever read; everything clipdesk writes lives here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from clipdesk import db
from clipdesk.errors import ClipdeskError, LibraryError

LIBRARY_ENV = "CLIPDESK_LIBRARY"
DB_NAME = "library.sqlite3"


def default_library_dir() -> Path:
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("clipdesk", appauthor=False)) / "library"


class Library:
    """Opens (creating or upgrading as needed) the library in ``directory``."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_library_dir()
        self.writing = False  # this process holds the writer lock (see ``exclusive``)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.index_dir.mkdir(exist_ok=True)
            self.cache_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise LibraryError(f"cannot create the library folder {self.directory}: {exc}") from exc
        self.engine = db.open_engine(self.db_path)
        try:
            db.migrate(self.engine)
        except DatabaseError as exc:
            raise LibraryError(
                f"the library database {self.db_path} cannot be opened: {exc.orig}. "
                "If it is damaged, move it aside; clipdesk will build a new one."
            ) from exc

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
        with file_lock(self.directory / "writer.lock", busy):
            self.writing = True
            try:
                yield
            finally:
                self.writing = False


@contextlib.contextmanager
def file_lock(path: Path, busy: Exception) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` across processes, or raise ``busy`` at once."""
    fh: IO[str] = open(path, "a+")  # noqa: SIM115 - held for the with-block
    try:
        if not _try_lock(fh):
            raise busy
        try:
            yield
        finally:
            _unlock(fh)
    finally:
        fh.close()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fh: IO[str]) -> bool:
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fh: IO[str]) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fh: IO[str]) -> bool:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
