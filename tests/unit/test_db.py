from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clipdesk.errors import LibraryError
from clipdesk.library import Library, db


def test_new_library_is_migrated_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    lib = Library(tmp_path / "lib")
    with lib.engine.connect() as conn:
        assert db.schema_version(conn) == db.SCHEMA_VERSION
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    lib.close()


def test_orm_models_match_the_migrated_schema(tmp_path: Path) -> None:
    """The typed models and the hand-written migrations must describe the same tables."""
    lib = Library(tmp_path / "lib")
    raw = sqlite3.connect(lib.db_path)
    for table in db.Base.metadata.sorted_tables:
        on_disk = {row[1] for row in raw.execute(f"PRAGMA table_info({table.name})")}
        assert on_disk == set(table.columns.keys()), table.name
    raw.close()
    lib.close()


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    lib = Library(tmp_path / "lib")
    lib.set_setting("k", "v")
    lib.close()
    again = Library(tmp_path / "lib")
    assert again.get_setting("k") == "v"
    with again.engine.connect() as conn:
        assert db.migrate(again.engine) == db.SCHEMA_VERSION
        assert db.schema_version(conn) == db.SCHEMA_VERSION
    again.close()


def test_library_from_a_newer_clipdesk_is_refused(tmp_path: Path) -> None:
    lib = Library(tmp_path / "lib")
    lib.close()
    raw = sqlite3.connect(tmp_path / "lib" / "library.sqlite3")
    raw.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(LibraryError, match="newer clipdesk"):
        Library(tmp_path / "lib")


def test_damaged_database_gives_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "library.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LibraryError, match="cannot be opened"):
        Library(folder)


def test_generation_counter_moves_on_changes(tmp_path: Path) -> None:
    lib = Library(tmp_path / "lib")
    with lib.session() as s:
        g0 = db.current_generation(s.connection())
        s.add(db.Root(path="/nowhere", added_at=0.0))
        s.flush()
        s.add(
            db.Photo(
                root_id=1,
                path="/nowhere/a.jpg",
                size=1,
                mtime_ns=1,
                fingerprint="f",
                taken_at=0.0,
                taken_from_exif=False,
            )
        )
        s.commit()
        assert db.current_generation(s.connection()) > g0
    lib.close()


def test_library_env_variable_sets_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPDESK_LIBRARY", str(tmp_path / "from-env"))
    lib = Library()
    assert lib.directory == tmp_path / "from-env"
    assert lib.db_path.exists()
    lib.close()


def test_second_writer_is_refused(tmp_path: Path) -> None:
    from clipdesk.errors import ClipdeskError

    lib = Library(tmp_path / "lib")
    other = Library(tmp_path / "lib")
    with (
        lib.exclusive("indexing"),
        pytest.raises(ClipdeskError, match="already indexing"),
        other.exclusive("indexing"),
    ):
        pass
    lib.close()
    other.close()


def test_a_version_1_library_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    raw = sqlite3.connect(folder / "library.sqlite3")
    for statement in db.MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO settings (key, value) VALUES ('model_key', 'm')")
    raw.commit()
    raw.close()
    lib = Library(folder)
    with lib.engine.connect() as conn:
        assert db.schema_version(conn) == db.SCHEMA_VERSION
    assert lib.get_setting("model_key") == "m"
    raw = sqlite3.connect(folder / "library.sqlite3")
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert {"label_sets", "labels", "photo_tags"} <= tables
    lib.close()
