"""SQLite storage: the single source of truth of a library, vectors included.

Typed SQLAlchemy 2.x models over a schema that is created and upgraded by the numbered
migrations below (``PRAGMA user_version`` holds the version). Paths are stored as the
file system's own bytes so that names which are not valid UTF-8 survive a round trip.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from clipdesk.errors import LibraryError


class FsPath(TypeDecorator[str]):
    """A path kept as the OS's bytes (``os.fsencode``), seen from Python as ``str``.

    Undecodable bytes travel as surrogate escapes, so any name the OS can give us can be
    stored, compared and opened again. Byte order also makes prefix ranges ("everything
    under this folder") a plain index range scan.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        return None if value is None else os.fsdecode(value)


class Base(DeclarativeBase):
    pass


class Root(Base):
    """A folder the user added. Its files are read, never written."""

    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    added_at: Mapped[float] = mapped_column(Float)
    # The folder's st_dev when it was added (None: added before schema 3, recorded on the
    # next scan that finds it). Another device at the same path is a drive not mounted.
    device: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Why the last scan left the folder alone (missing, not mounted), or None.
    unavailable: Mapped[str | None] = mapped_column(Text, nullable=True)


class Photo(Base):
    """One image file. A changed file gets a new row, so an id always names one content."""

    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_id: Mapped[int] = mapped_column(ForeignKey("roots.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    taken_at: Mapped[float] = mapped_column(Float)
    taken_from_exif: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # EXIF "Make Model" (None: not read yet, the photo was scanned before schema 4; "": none)
    camera: Mapped[str | None] = mapped_column(Text, nullable=True)


class Model(Base):
    """A CLIP model that made vectors in this library."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String, unique=True)
    spec: Mapped[str] = mapped_column(String)
    dim: Mapped[int] = mapped_column(Integer)
    config_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Embedding(Base):
    """An L2-normalised float32 vector of one file content under one model.

    Keyed by content fingerprint, not by photo, so a renamed or moved file (or an exact
    copy) reuses the vector instead of being embedded again.
    """

    __tablename__ = "embeddings"
    fingerprint: Mapped[str] = mapped_column(String, primary_key=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Generation(Base):
    """A counter bumped by triggers whenever the set of searchable vectors may change.

    The HNSW file records the counter it was saved at; if they differ, the index is
    brought up to date from SQLite before it is searched.
    """

    __tablename__ = "generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class LabelSet(Base):
    """A named list of labels the user tags photos with ("birthday, hiking, receipts")."""

    __tablename__ = "label_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class Label(Base):
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_set_id: Mapped[int] = mapped_column(ForeignKey("label_sets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String)
    position: Mapped[int] = mapped_column(Integer)


class PhotoTag(Base):
    """A label given to a photo by zero-shot tagging, with its confidence and model."""

    __tablename__ = "photo_tags"
    photo_id: Mapped[int] = mapped_column(
        ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True
    )
    label_id: Mapped[int] = mapped_column(
        ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float)


class TagMark(Base):
    """What the user said of one tag on one photo content: ``confirmed``, ``rejected``,
    ``manual`` (added by hand) or ``imported`` (read from XMP/IPTC keywords).

    Keyed by content fingerprint and tag name, not by photo id, label set or model: a mark
    survives a rename, a move, a re-run of tagging, a label set made again and a model
    switch. Automatic tags (``photo_tags``) are the model's; a rejected mark hides one and
    keeps every automatic run from giving it again.
    """

    __tablename__ = "tag_marks"
    fingerprint: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    source: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float)


class Album(Base):
    """A smart album: a saved search, run again whenever it is shown (so it follows the
    photos as they are indexed, renamed or deleted, and a model switch)."""

    __tablename__ = "albums"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    query: Mapped[str] = mapped_column(Text)  # as typed: terms and filters (search.query)
    cutoff: Mapped[bool] = mapped_column(Boolean)
    sort: Mapped[str] = mapped_column(String)
    k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


_BUMP = "UPDATE generation SET value = value + 1 WHERE id = 1;"

# Each migration moves the schema from version N to N+1, inside one transaction.
_MIGRATION_1 = [
    """CREATE TABLE roots (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        added_at FLOAT NOT NULL
    )""",
    # AUTOINCREMENT: ids are never reused, because they double as HNSW labels.
    """CREATE TABLE photos (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        root_id INTEGER NOT NULL REFERENCES roots(id) ON DELETE CASCADE,
        path BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        fingerprint VARCHAR NOT NULL,
        width INTEGER,
        height INTEGER,
        taken_at FLOAT NOT NULL,
        taken_from_exif BOOLEAN NOT NULL,
        error TEXT
    )""",
    "CREATE INDEX ix_photos_fingerprint ON photos (fingerprint)",
    "CREATE INDEX ix_photos_root_id ON photos (root_id)",
    """CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        key VARCHAR NOT NULL UNIQUE,
        spec VARCHAR NOT NULL,
        dim INTEGER NOT NULL,
        config_json TEXT,
        created_at FLOAT NOT NULL
    )""",
    """CREATE TABLE embeddings (
        fingerprint VARCHAR NOT NULL,
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        vector BLOB NOT NULL,
        PRIMARY KEY (fingerprint, model_id)
    )""",
    "CREATE TABLE settings (key VARCHAR PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE generation (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO generation (id, value) VALUES (1, 0)",
    f"CREATE TRIGGER photos_ins AFTER INSERT ON photos BEGIN {_BUMP} END",
    f"CREATE TRIGGER photos_del AFTER DELETE ON photos BEGIN {_BUMP} END",
    f"CREATE TRIGGER photos_upd AFTER UPDATE OF fingerprint, error ON photos BEGIN {_BUMP} END",
    f"CREATE TRIGGER emb_ins AFTER INSERT ON embeddings BEGIN {_BUMP} END",
    f"CREATE TRIGGER emb_del AFTER DELETE ON embeddings BEGIN {_BUMP} END",
]

_MIGRATION_2 = [
    """CREATE TABLE label_sets (
        id INTEGER PRIMARY KEY,
        name VARCHAR NOT NULL UNIQUE,
        created_at FLOAT NOT NULL
    )""",
    """CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        label_set_id INTEGER NOT NULL REFERENCES label_sets(id) ON DELETE CASCADE,
        name VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        UNIQUE (label_set_id, name)
    )""",
    """CREATE TABLE photo_tags (
        photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
        label_id INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        score FLOAT NOT NULL,
        PRIMARY KEY (photo_id, label_id, model_id)
    )""",
    "CREATE INDEX ix_photo_tags_label ON photo_tags (label_id, model_id)",
]

# A folder that is a mount point, unmounted, is an empty folder on another device: the
# device recorded here tells it apart from a folder whose photos were all deleted.
_MIGRATION_3 = [
    "ALTER TABLE roots ADD COLUMN device INTEGER",
    "ALTER TABLE roots ADD COLUMN unavailable TEXT",
]

# The camera model (EXIF Make/Model; NULL: not read yet, '' none) for the camera: filter;
# smart albums: a saved search (the query as typed, with its filters), its cutoff and order.
_MIGRATION_4 = [
    "ALTER TABLE photos ADD COLUMN camera TEXT",
    """CREATE TABLE albums (
        id INTEGER PRIMARY KEY,
        name VARCHAR NOT NULL UNIQUE,
        query TEXT NOT NULL,
        cutoff BOOLEAN NOT NULL,
        sort VARCHAR NOT NULL,
        k INTEGER,
        created_at FLOAT NOT NULL,
        updated_at FLOAT NOT NULL
    )""",
]

# The user's word on tags (confirmed, rejected, manual, imported), by content fingerprint.
_MIGRATION_5 = [
    """CREATE TABLE tag_marks (
        fingerprint VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        source VARCHAR NOT NULL
            CHECK (source IN ('confirmed', 'rejected', 'manual', 'imported')),
        created_at FLOAT NOT NULL,
        PRIMARY KEY (fingerprint, name)
    )""",
    "CREATE INDEX ix_tag_marks_name ON tag_marks (name, source)",
]

MIGRATIONS: list[list[str]] = [
    _MIGRATION_1,
    _MIGRATION_2,
    _MIGRATION_3,
    _MIGRATION_4,
    _MIGRATION_5,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _on_connect(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry, read_only: bool = False
) -> None:
    cursor = dbapi_connection.cursor()
    if not read_only:  # already WAL; setting it would be a write
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # NORMAL is durable across application crashes in WAL mode; only a power cut may
    # lose the last commits, never corrupt the file.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_engine(db_path: Path, read_only: bool = False, immutable: bool = False) -> Engine:
    """An engine on the library's database; ``read_only`` for a folder nobody can write,
    ``immutable`` where SQLite cannot even open the WAL's shared-memory file there (only
    safe when the WAL holds nothing: SQLite then reads the database file alone)."""
    if not read_only:
        engine = create_engine(f"sqlite:///{db_path}")
        event.listen(engine, "connect", _on_connect)
        return engine
    uri = f"file:{quote(os.fspath(db_path))}?mode=ro" + ("&immutable=1" if immutable else "")
    engine = create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
        poolclass=QueuePool,  # as for a database file (the URL alone says "in memory")
    )
    event.listen(engine, "connect", lambda conn, record: _on_connect(conn, record, True))
    return engine


def schema_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def migrate(engine: Engine, on_step: Callable[[int], None] | None = None) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it had before."""
    with engine.begin() as conn:
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise LibraryError(
                f"this library was written by a newer clipdesk (schema {before}, "
                f"this version knows up to {SCHEMA_VERSION}); please upgrade clipdesk"
            )
        for version in range(before, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"PRAGMA user_version = {version + 1}")
            if on_step:
                on_step(version + 1)
    return before


def current_generation(conn: Connection) -> int:
    return int(conn.execute(text("SELECT value FROM generation WHERE id = 1")).scalar_one())
