"""File → Download model…: the catalog with each model's license, and a research-only
license confirmed before anything is downloaded."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from clipdesk.gui.dialogs import ModelCatalogDialog
from clipdesk.gui.main_window import MainWindow
from clipdesk.models.catalog import CATALOG
from clipdesk.services import Clipdesk


def _rows(dialog: ModelCatalogDialog) -> dict[str, list[str]]:
    rows = {}
    for i in range(dialog.table.topLevelItemCount()):
        item = dialog.table.topLevelItem(i)
        assert item is not None
        rows[item.text(0)] = [item.text(c) for c in range(dialog.table.columnCount())]
    return rows


def test_the_dialog_shows_every_catalog_model_with_its_license(qtbot: Any, library: Any) -> None:
    dialog = ModelCatalogDialog(Clipdesk(library).models.available())
    qtbot.addWidget(dialog)
    rows = _rows(dialog)
    assert list(rows) == [entry.name for entry in CATALOG]
    license_column = ModelCatalogDialog.COLUMNS.index("License")
    for entry in CATALOG:
        shown = rows[entry.name][license_column]
        assert shown.startswith(entry.license), entry.name
        assert shown.endswith("(research only)") == entry.research_only, entry.name
    assert dialog.selected_name() == "vit-b-32"  # the default is preselected
    item = dialog.table.findItems("mobileclip2-s0", Qt.MatchFlag.MatchExactly, 0)[0]
    dialog.table.setCurrentItem(item)
    assert "research use only" in dialog.details.text()
    assert "ml-mobileclip" in dialog.details.text()  # the license's own text, linked


def test_a_research_only_model_is_downloaded_only_after_confirming_its_license(
    qtbot: Any, library: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    services = Clipdesk(library)
    store = services.models
    monkeypatch.setattr(store, "models_dir", tmp_path / "models")
    monkeypatch.setattr(store, "endpoint", "http://127.0.0.1:9")  # nothing answers there
    chosen = {"name": "mobileclip2-s0"}

    def pick(dialog: ModelCatalogDialog) -> int:
        item = dialog.table.findItems(chosen["name"], Qt.MatchFlag.MatchExactly, 0)[0]
        dialog.table.setCurrentItem(item)
        return ModelCatalogDialog.DialogCode.Accepted.value

    monkeypatch.setattr(ModelCatalogDialog, "exec", pick)
    asked: list[str] = []
    answer = {"button": QMessageBox.StandardButton.No}

    def question(_parent: object, _title: str, text: str, *_args: object) -> Any:
        asked.append(text)
        return answer["button"]

    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", question)
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, _t, text: warnings.append(text))
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)

    win.choose_model_download()  # declined: nothing starts, nothing is written
    assert len(asked) == 1 and "Apple Machine Learning Research Model License" in asked[0]
    assert "not downloaded" in win.statusBar().currentMessage()
    assert not (tmp_path / "models").exists()

    answer["button"] = QMessageBox.StandardButton.Yes
    win.choose_model_download()  # accepted: the download goes to the hub (absent here)
    qtbot.waitUntil(lambda: bool(warnings), timeout=60_000)
    assert len(asked) == 2
    assert "accept-license" not in warnings[0] and "research" not in warnings[0]

    chosen["name"] = "pe-core-t-16"  # Apache-2.0: no question asked
    warnings.clear()
    win.choose_model_download()
    qtbot.waitUntil(lambda: bool(warnings), timeout=60_000)
    assert len(asked) == 2
    win.close()
