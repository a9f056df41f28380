"""Guards against a Qt binding that would crash a long session."""

from __future__ import annotations

import sys
from typing import Any

from PySide6.QtCore import QStringListModel, Qt

from clipdesk.gui.grid import SCORE_ROLE, PhotoGridModel
from clipdesk.library.browsing import PhotoRef


def test_empty_model_data_keeps_none_alive(qapp: Any) -> None:
    # PySide6 6.12.0 drops a reference to None whenever an empty QVariant reaches Python;
    # painting a grid does that thousands of times a second, and Python 3.11 then aborts
    # ("deallocating None"). The count must not drift.
    grid = PhotoGridModel()
    grid.set_photos([PhotoRef(1, "/p/a.jpg", "f", 1, 1, 0.0)])
    for model in (QStringListModel(["a"]), grid):
        index = model.index(0)
        before = sys.getrefcount(None)
        for _ in range(2000):
            index.data(Qt.ItemDataRole.DecorationRole)
            index.data(SCORE_ROLE)
        assert abs(sys.getrefcount(None) - before) < 100


def test_a_listing_by_id_fetches_only_the_pages_shown(qapp: Any) -> None:
    import numpy as np

    fetched: list[list[int]] = []

    def fetch(ids: list[int]) -> dict[int, PhotoRef]:
        fetched.append(ids)
        return {i: PhotoRef(i, f"/p/{i}.jpg", f"f{i % 7}", 1, 1, 0.0) for i in ids if i != 5}

    model = PhotoGridModel()
    model.set_ids(np.arange(1_000_000, dtype=np.int64), fetch)
    assert model.rowCount() == 1_000_000 and fetched == []
    assert model.ref_at(3) == PhotoRef(3, "/p/3.jpg", "f3", 1, 1, 0.0)
    assert model.ref_at(5) is None  # gone from the library since the listing
    assert model.ref_at(999_999) is not None
    assert [len(ids) for ids in fetched] == [256, 64]  # two pages, not a million rows
    for row in range(0, 256 * (PhotoGridModel.MAX_PAGES + 10), 256):
        model.ref_at(row)
    assert len(model._pages) == PhotoGridModel.MAX_PAGES  # old pages are let go
    assert model.index(7).data(Qt.ItemDataRole.DisplayRole) == "7.jpg"
