"""The library's storage failing under clipdesk: a full disk, a read-only or vanished
library folder, garbled cache files, an emptied database. Each gives the user a sentence
(never a traceback, never advice to throw a healthy library away), searches keep working
from what is there, and caches that no longer match their checksums are rebuilt from
SQLite."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.cli import main as cli
from clipdesk.errors import StorageError
from clipdesk.library import Library, db
from clipdesk.models.encoder import ClipEncoder
from clipdesk.search.compact import CompactVectors
from clipdesk.search.vector_index import VectorIndex, _graph_file_cut_short
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec

QUERY = "a photo of shoes"


@pytest.fixture()
def indexed(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> Clipdesk:
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    return app


def _cli(library: Library, *args: str) -> int:
    return cli.main(["--library", str(library.directory), *args])


def _paths(out: str) -> list[str]:
    return [hit["path"] for hit in json.loads(out)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip(path: Path, at: int, count: int = 64) -> None:
    """Garble ``count`` bytes at ``at`` the way a bad disk block does."""
    with open(path, "r+b") as fh:
        fh.seek(at)
        data = bytearray(fh.read(count))
        fh.seek(at)
        fh.write(bytes(b ^ 0x5A for b in data))


def _full_disk(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- a full disk -------------------------------------------------------------------------


def test_search_on_a_full_disk_answers_and_keeps_the_rebuilt_graph_in_memory(
    indexed: Clipdesk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    library = indexed.library
    assert _cli(library, "search", QUERY, "--json") == 0
    expected = _paths(capsys.readouterr().out)
    # Without the graph and the int8 copy the search must rebuild the graph, and the disk
    # refuses the save (fsync is where some file systems report it).
    for path in library.index_dir.iterdir():
        path.unlink()
    monkeypatch.setattr("clipdesk.search.vector_index.fsync_file", _full_disk)
    assert _cli(library, "search", QUERY, "--json") == 0
    assert _paths(capsys.readouterr().out) == expected
    assert list(library.index_dir.iterdir()) == []  # nothing half-written is left
    photo = expected[0]
    assert _cli(library, "similar", photo, "--json") == 0
    assert photo not in _paths(capsys.readouterr().out)


def test_index_on_a_full_disk_stops_with_a_sentence_and_keeps_what_was_committed(
    app: Clipdesk,
    photos: Path,
    tiny_spec: ModelSpec,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    library = app.library
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    for extra in range(3):  # new photos to embed (new bytes), more than one batch of them
        more = photos.parent / f"more{extra}"
        shutil.copytree(photos, more)
        for photo in more.rglob("*.jpg"):
            with open(photo, "ab") as fh:  # after the JPEG's end: same picture, new file
                fh.write(bytes([extra + 1]) * 16)
        app.add_folders([more])
    # Writing one batch of embeddings fills the disk: the int8 copy's append is refused.
    appends = []

    def append_then_full(self: CompactVectors, ids: np.ndarray, vectors: np.ndarray) -> None:
        appends.append(len(ids))
        if len(appends) > 1:
            _full_disk()
        original_append(self, ids, vectors)

    original_append = CompactVectors.append
    monkeypatch.setattr(CompactVectors, "append", append_then_full)
    assert _cli(library, "index", "--batch-size", "8") == 2
    err = capsys.readouterr().err
    assert "the disk holding the library is full" in err and "MB free" in err
    assert "nothing was lost" in err and "Traceback" not in err
    with sqlite3.connect(library.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        embedded = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    assert 30 < embedded < 120  # the batches committed before the refusal are kept
    monkeypatch.setattr(CompactVectors, "append", original_append)
    assert _cli(library, "index") == 0  # with space again, it carries on
    capsys.readouterr()
    assert _cli(library, "search", QUERY, "--json", "-k", "120") == 0
    assert len(_paths(capsys.readouterr().out)) == 120


def test_a_graph_cut_short_by_a_full_disk_is_never_pointed_at(
    indexed: Clipdesk, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    index = indexed.vector_index()
    before = index.index_path
    assert before is not None and not _graph_file_cut_short(before, len(index))
    for cut in (1, 4, 100, before.stat().st_size // 2):  # every way hnswlib stops writing
        short = tmp_path / "short.hnsw"
        shutil.copy(before, short)
        with open(short, "r+b") as fh:
            fh.truncate(before.stat().st_size - cut)
        assert _graph_file_cut_short(short, len(index)), cut

    real = index._index

    class Truncating:  # hnswlib on a full disk: the file ends early, no error
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def save_index(self, path: str) -> None:
            real.save_index(path)
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) - 100)

    graphs = sorted(index.meta_path.parent.glob("*.hnsw"))
    index._index = Truncating()
    index._saved_generation = -2
    with pytest.raises(OSError) as raised:
        index.save()
    assert raised.value.errno == errno.ENOSPC
    assert index.index_path == before and before.exists()  # the old pair still stands
    assert sorted(index.meta_path.parent.glob("*.hnsw")) == graphs  # the cut file is gone


# -- a read-only library ----------------------------------------------------------------


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """What a read-only mount (or another user's library) looks like to os.access; the
    tests run as root, which the mode bits do not stop."""
    real = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and Path(path).is_relative_to(folder):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_read_only_library_searches_and_says_read_only_for_writes(
    indexed: Clipdesk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    library = indexed.library
    assert _cli(library, "search", QUERY, "--json") == 0
    expected = _paths(capsys.readouterr().out)
    library.close()
    before = {p.name: _sha(p) for p in library.directory.rglob("*") if p.is_file()}
    _read_only(monkeypatch, library.directory)
    assert _cli(library, "search", QUERY, "--json") == 0
    assert _paths(capsys.readouterr().out) == expected
    assert _cli(library, "status") == 0
    capsys.readouterr()
    for args in (["index"], ["add", str(library.directory.parent)], ["labels", "create", "x", "a"]):
        assert _cli(library, *args) == 2, args
        err = capsys.readouterr().err
        assert "the library folder is read-only" in err, (args, err)
        assert "damaged" not in err.replace("Nothing is damaged", "") and "aside" not in err
    after = {p.name: _sha(p) for p in library.directory.rglob("*") if p.is_file()}
    assert after == before  # not a byte written


def test_sqlite_refusing_a_write_is_called_read_only(
    indexed: Clipdesk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder looks writable, but SQLite is refused (a mount turned read-only while
    clipdesk runs, an ACL): the words are the same."""
    library = indexed.library

    def refuse(self: Clipdesk, folders: list[Any]) -> list[str]:
        uri = f"file:{self.library.db_path}?mode=ro"
        with sqlite3.connect(uri, uri=True) as conn:  # SQLite's own refusal
            conn.execute("INSERT INTO settings VALUES ('k', 'v')")
        return []

    monkeypatch.setattr(Clipdesk, "add_folders", refuse)
    assert _cli(library, "add", str(library.directory.parent)) == 2
    err = capsys.readouterr().err
    assert "the library folder is read-only" in err and "aside" not in err


# -- a library folder that vanishes -----------------------------------------------------


def test_a_library_folder_deleted_while_running_is_named(
    indexed: Clipdesk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    library = indexed.library
    for path in library.index_dir.iterdir():  # the search must read and write
        path.unlink()
    real = Clipdesk.vector_index

    def vanish_first(self: Clipdesk) -> VectorIndex:
        shutil.rmtree(self.library.directory)
        return real(self)

    monkeypatch.setattr(Clipdesk, "vector_index", vanish_first)
    code = _cli(library, "search", QUERY)
    err = capsys.readouterr().err
    assert code == 2 and "the library folder vanished" in err and "Traceback" not in err


# -- garbled caches ---------------------------------------------------------------------


def _cold(library: Library, encoder: ClipEncoder) -> Clipdesk:
    app = Clipdesk(library)
    app.preload(encoder)
    app.cold_scan = True
    return app


@pytest.mark.parametrize("part", ["codes", "ids", "scales"])
def test_a_garbled_int8_copy_is_noticed_and_written_again(
    indexed: Clipdesk, tiny_encoder: ClipEncoder, part: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected = [(h.path, round(h.score, 5)) for h in indexed.search_text(QUERY, k=10)]
    compact = indexed.vector_index().compact
    target = compact.pointer.with_suffix(f".{part}")
    _flip(target, target.stat().st_size // 3)
    assert not compact.verify()
    garbled = _sha(target)
    with caplog.at_level(logging.WARNING, logger="clipdesk"):
        cold = _cold(indexed.library, tiny_encoder)
        got = [(h.path, round(h.score, 5)) for h in cold.search_text(QUERY, k=10)]
    assert got == expected
    assert "damaged" in caplog.text
    assert _sha(target) != garbled and compact.verify()  # written again from SQLite
    again = _cold(indexed.library, tiny_encoder)
    assert [(h.path, round(h.score, 5)) for h in again.search_text(QUERY, k=10)] == expected
    assert again.vector_index()._index is None  # the repaired copy answered


def test_index_repairs_a_garbled_int8_copy(indexed: Clipdesk, tiny_spec: ModelSpec) -> None:
    compact = indexed.vector_index().compact
    codes = compact.pointer.with_suffix(".codes")
    _flip(codes, 10)
    fresh = Clipdesk(indexed.library)
    fresh.preload(indexed.encoder())
    list(fresh.index(tiny_spec, "cpu"))
    assert compact.verify()


def test_garbled_vectors_in_the_graph_are_rebuilt_not_scored(
    indexed: Clipdesk, caplog: pytest.LogCaptureFixture
) -> None:
    index = indexed.vector_index()
    query = indexed.encoder().encode_texts([QUERY])[0]
    allowed = set(list(index._index.get_ids_list())[:12])  # a tag filter: exact scores
    expected = index.search(query, 10, allowed=allowed)
    path = index.index_path
    assert path is not None
    _flip(path, path.stat().st_size // 2, 256)
    with caplog.at_level(logging.WARNING, logger="clipdesk"):
        other = VectorIndex(indexed.library, index.model_key, index.model_id, index.dim)
        got = other.search(query, 10, allowed=allowed)
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-6)
    assert other.last_action == "rebuilt" and "damaged" in caplog.text
    assert other.index_path is not None and other.index_path != path  # written again
    third = VectorIndex(indexed.library, index.model_key, index.model_id, index.dim)
    third.ensure_current()
    assert third.last_action == "loaded"


def test_a_graph_pointer_without_checksums_gets_them(indexed: Clipdesk) -> None:
    index = indexed.vector_index()
    meta = json.loads(index.meta_path.read_text())
    del meta["crc"], meta["size"]  # as an earlier clipdesk wrote it
    index.meta_path.write_text(json.dumps(meta))
    other = VectorIndex(indexed.library, index.model_key, index.model_id, index.dim)
    other.ensure_current()
    assert other.last_action == "loaded"
    assert "crc" in json.loads(index.meta_path.read_text())


# -- an emptied or foreign database -----------------------------------------------------


def test_an_empty_database_file_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "library"
    Library(folder).close()
    (folder / "library.sqlite3").write_bytes(b"")
    with pytest.raises(StorageError, match="is empty \\(0 bytes\\)"):
        Library(folder)
    assert cli.main(["--library", str(folder), "status"]) == 2
    err = capsys.readouterr().err
    assert "Restore library.sqlite3 from a backup" in err and "does not write over it" in err
    assert (folder / "library.sqlite3").stat().st_size == 0


@pytest.mark.parametrize("damage", ["truncated", "not sqlite"])
def test_a_damaged_database_is_named_and_kept(
    indexed: Clipdesk, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    library = indexed.library
    library.close()
    path = library.db_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"x" * len(data))
    before = _sha(path)
    code = _cli(library, "search", QUERY)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "is damaged" in err and "keeps the file as it is" in err and "backup" in err
    assert _sha(path) == before


def test_the_database_schema_is_read_not_migrated_when_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "library"
    Library(folder).close()
    with sqlite3.connect(folder / "library.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 1")
    _read_only(monkeypatch, folder)
    with pytest.raises(StorageError, match=r"read-only.*upgrade"):
        Library(folder)
    assert db.SCHEMA_VERSION > 1


@pytest.fixture()
def small_disk(tmp_path: Path) -> Any:
    """A real 4 MB file system (tmpfs), where this process may mount one (root with
    CAP_SYS_ADMIN); skipped elsewhere."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk(
    small_disk: Path,
    photos: Path,
    tiny_encoder: ClipEncoder,
    tiny_spec: ModelSpec,
    capsys: pytest.CaptureFixture[str],
) -> None:
    library = Library(small_disk / "library")
    app = Clipdesk(library)
    app.preload(tiny_encoder)
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    library.close()
    assert _cli(library, "search", QUERY, "--json") == 0
    expected = _paths(capsys.readouterr().out)
    for path in library.index_dir.iterdir():  # the search must rebuild the graph
        path.unlink()
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:  # every block the disk has left
            fh.write(b"\0" * 4096)
    assert shutil.disk_usage(small_disk).free == 0
    assert _cli(library, "search", QUERY, "--json") == 0
    assert _paths(capsys.readouterr().out) == expected
    assert _cli(library, "add", str(photos.parent)) == 2
    err = capsys.readouterr().err
    assert "the disk holding the library is full (0 MB free" in err and "Traceback" not in err
    filler.unlink()
    assert _cli(library, "index") == 0
    assert len(list(library.index_dir.glob("*.hnsw"))) == 1


def test_a_new_library_on_a_full_disk_leaves_no_empty_database(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    folder = small_disk / "library"
    for _attempt in range(2):  # the second must not take the first's leftovers for a loss
        assert cli.main(["--library", str(folder), "status"]) == 2
        assert "the disk holding the library is full" in capsys.readouterr().err
        assert not (folder / "library.sqlite3").exists()
    filler.unlink()
    assert cli.main(["--library", str(folder), "status"]) == 0


def test_a_copy_rewritten_while_a_search_reads_it_is_stale_not_damaged(
    indexed: Clipdesk,
    tiny_encoder: ClipEncoder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review: a search that read the old pointer and then the indexer's rewritten files
    called the copy damaged and tried to repair it."""
    from clipdesk.search.compact import CompactVectors

    expected = [(h.path, round(h.score, 5)) for h in indexed.search_text(QUERY, k=10)]
    compact = indexed.vector_index().compact
    real_read = CompactVectors._read_pointer
    rewrites: list[int] = []

    def read_then_rewrite(self: CompactVectors) -> dict[str, object] | None:
        meta = real_read(self)
        if not rewrites and self.pointer == compact.pointer:  # the writer's turn, just now
            rewrites.append(1)
            codes = self.pointer.with_suffix(".codes")
            _flip(codes, 0, codes.stat().st_size)  # other rows than the old pointer counted
            os.replace(_copy(self.pointer), self.pointer)  # a new pointer file
        return meta

    monkeypatch.setattr(CompactVectors, "_read_pointer", read_then_rewrite)
    with caplog.at_level(logging.WARNING, logger="clipdesk"):
        cold = _cold(indexed.library, tiny_encoder)
        got = [(h.path, round(h.score, 5)) for h in cold.search_text(QUERY, k=10)]
    assert rewrites and got == expected  # answered from the graph
    assert "damaged" not in caplog.text


def _copy(path: Path) -> Path:
    twin = path.with_suffix(".twin")
    twin.write_bytes(path.read_bytes())
    return twin
