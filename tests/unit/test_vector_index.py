from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import delete

from clipdesk.library import db
from clipdesk.search.vector_index import VectorIndex
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec


def _indexed_app(app: Clipdesk, photos: Path, spec: ModelSpec) -> VectorIndex:
    app.add_folders([photos])
    list(app.index(spec, "cpu"))
    return app.vector_index()


def _fresh(app: Clipdesk) -> VectorIndex:
    """The index as another process would open it: from disk."""
    current = app.vector_index()
    return VectorIndex(app.library, current.model_key, current.model_id, current.dim)


def _query(app: Clipdesk) -> np.ndarray:
    query: np.ndarray = app.encoder().encode_texts(["a shirt"])[0]
    return query


def test_saved_index_is_loaded_not_rebuilt(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    index = _indexed_app(app, photos, tiny_spec)
    assert index.index_path is not None and index.index_path.exists()
    assert not list(index.meta_path.parent.glob("*.tmp"))
    other = _fresh(app)
    assert other.search(_query(app), 5) == index.search(_query(app), 5)
    assert other.last_action == "loaded"


def test_missing_or_corrupt_index_is_rebuilt_from_sqlite(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    index = _indexed_app(app, photos, tiny_spec)
    expected = index.search(_query(app), 10)
    assert index.index_path is not None
    index.index_path.unlink()
    rebuilt = _fresh(app)
    assert rebuilt.search(_query(app), 10) == expected
    assert rebuilt.last_action == "rebuilt"
    assert index.index_path is not None
    index.index_path.write_bytes(b"garbage" * 10)
    again = _fresh(app)
    assert again.search(_query(app), 10) == expected
    assert again.last_action == "rebuilt"


def test_stale_index_catches_up_with_deletions(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    index = _indexed_app(app, photos, tiny_spec)
    top = index.search(_query(app), 3)
    with app.library.session() as s:
        s.execute(delete(db.Photo).where(db.Photo.id == top[0][0]))
        s.commit()
    # Same object (a GUI that keeps its index) and a new one (another process).
    assert top[0][0] not in [pid for pid, _ in index.search(_query(app), 30)]
    assert index.last_action == "caught up"
    other = _fresh(app)
    ids = [pid for pid, _ in other.search(_query(app), 30)]
    assert top[0][0] not in ids and len(ids) == 29


def test_index_from_another_model_is_not_used(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    index = _indexed_app(app, photos, tiny_spec)
    meta = json.loads(index.meta_path.read_text())
    meta["model_key"] = "ViT-B-32:someone-else"
    index.meta_path.write_text(json.dumps(meta))
    other = _fresh(app)
    other.ensure_current()
    assert other.last_action == "rebuilt"
    assert json.loads(index.meta_path.read_text())["model_key"] == index.model_key


def test_index_grows_past_its_initial_capacity(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    index = _indexed_app(app, photos, tiny_spec)
    with app.library.engine.connect() as conn:
        generation = db.current_generation(conn)
    rng = np.random.default_rng(0)
    extra = rng.normal(size=(3000, index.dim)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    index.add(np.arange(10_000, 13_000), extra, before=generation, after=generation)
    assert len(index) == 3030
    assert index.search(extra[42], 1)[0][0] == 10_042
    assert index.last_action != "caught up"  # searched as added, no reload from SQLite


def test_concurrent_saves_leave_a_consistent_loadable_pair(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    """An indexer and a searcher in other processes may save at the same moment."""
    import threading

    index = _indexed_app(app, photos, tiny_spec)
    expected = index.search(_query(app), 10)
    others = [_fresh(app) for _ in range(4)]
    for other in others:
        other.ensure_current()
    threads = [threading.Thread(target=o.save) for o in others for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reopened = _fresh(app)
    assert reopened.search(_query(app), 10) == expected
    assert reopened.last_action == "loaded"
    graphs = list(index.meta_path.parent.glob("*.hnsw"))
    assert reopened.index_path in graphs
