"""Guards against a Qt binding that would crash a long session."""

from __future__ import annotations

import sys
from typing import Any

from PySide6.QtCore import QStringListModel, Qt

from clipdesk.browsing import PhotoRef
from clipdesk.gui.grid import SCORE_ROLE, PhotoGridModel


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
