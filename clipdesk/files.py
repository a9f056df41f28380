"""Files that clipdesk writes in its own folders: content hashes, atomic replacement and
locks across processes. Standard library only; the user's photos never pass through here
except to be read and hashed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CHUNK_SIZE = 1 << 20
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256_stream(fh: IO[bytes]) -> str:
    """The hex sha256 of what is left to read in ``fh``."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def copy_hashing(src: IO[bytes], out: IO[bytes]) -> str:
    """Copy ``src`` to ``out`` (flushed to disk) and return the sha256 of what was copied, so
    that what is checked is what was written."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
        digest.update(chunk)
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest()


def fsync_file(path: Path | str) -> None:
    """Flush a file that is already written (and closed) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, shared: bool = False, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old file or the new
    one, never half of it, and a crash leaves the old one (and no stray temporary file).

    The file is private to this user (0600), or with ``shared`` made as a plain ``open``
    makes it (0666 less the umask: another user searching a library read-only reads it).
    ``sync=False`` for a cache: no fsync, so a power cut may lose the file (made again).
    """
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    if shared:
        tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)  # the umask applies, as to any new file
    else:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a folder while it is being opened (waits for another
    process doing the same; Windows: no lock)."""
    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    import fcntl  # POSIX only (checked above)

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
