"""Issue 17: the backend choice notes the load it was measured under and is measured again
when that load could have changed the pick (and on ``index --remeasure``); ``--cores N``
reaches hnswlib's threads and numpy's BLAS threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import hnswlib
import pytest
import threadpoolctl

from clipdesk.services import Clipdesk
from clipdesk.throttle import Throttle, hnswlib_threads


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


def test_a_throttled_index_gives_hnswlib_and_blas_only_its_cores(
    app: Clipdesk, photos: Path, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--cores 1: every add_items of the index runs with num_threads=1, and numpy's BLAS
    has one thread while the photos are embedded; both are as before afterwards."""
    blas_before = _blas_threads()
    assert blas_before, "numpy has no BLAS threadpoolctl can see"
    seen: list[tuple[Any, list[int]]] = []
    real_add_items = hnswlib.Index.add_items

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        # called from commit_batch, inside the embed loop
        seen.append((kwargs.get("num_threads", "not given"), _blas_threads()))
        return real_add_items(self, *args, **kwargs)

    monkeypatch.setattr(hnswlib.Index, "add_items", spy)
    app.add_folders([photos])
    errors: list[BaseException] = []

    def run() -> None:  # on a thread of its own, as the app does (it lowers its priority)
        try:
            list(app.index(tiny_spec, "cpu", batch_size=8, throttle=Throttle(1, True)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert not errors, errors
    assert app.status().indexed == 30
    assert len(seen) >= 4  # 30 photos in batches of 8
    assert {threads for threads, _ in seen} == {1}
    assert all(blas and set(blas) == {1} for _, blas in seen), seen
    # restored: a search afterwards uses every core again
    assert _blas_threads() == blas_before
    assert hnswlib_threads() == -1


def test_a_throttled_rebuild_of_the_graph_uses_only_the_throttles_cores(
    app: Clipdesk, photos: Path, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph rebuilt from SQLite at the start of a throttled index (a missing or
    damaged graph file) is built with the throttle's cores too."""
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    index = app.vector_index()
    for graph in index.meta_path.parent.glob(f"{index._stem}-*"):  # type: ignore[attr-defined]
        graph.unlink()
    index.meta_path.unlink(missing_ok=True)
    index._index = None  # type: ignore[attr-defined]
    app._indexes.clear()  # type: ignore[attr-defined]
    seen: list[Any] = []
    real_add_items = hnswlib.Index.add_items

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("num_threads", "not given"))
        return real_add_items(self, *args, **kwargs)

    monkeypatch.setattr(hnswlib.Index, "add_items", spy)
    list(app.index(None, "cpu", throttle=Throttle(1)))
    assert seen and set(seen) == {1}
    assert len(app.search_text("a hat", k=3)) == 3
