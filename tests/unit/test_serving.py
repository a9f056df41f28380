"""Model serving (clipdesk.serving): a public preload, one row per model, one models folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from clipdesk.library import Library, db
from clipdesk.services import Clipdesk


def test_a_preloaded_model_serves_another_library_without_loading_again(
    app: Any, tiny_encoder: Any, photos: Path, tmp_path: Path
) -> None:
    other = Clipdesk(Library(tmp_path / "other"))
    other.preload(tiny_encoder)
    assert other.loaded_models() == [tiny_encoder.spec.key]
    assert other.encoder(tiny_encoder.spec, "cpu") is tiny_encoder
    other.add_folders([photos])
    list(other.index(tiny_encoder.spec, "cpu"))
    assert other.status().indexed == 30
    assert other.search_text("a photo of a hat", k=3)
    other.library.close()


def test_the_row_of_a_model_is_written_once(app: Any, tiny_encoder: Any, photos: Path) -> None:
    app.add_folders([photos])
    list(app.index(tiny_encoder.spec, "cpu"))
    first = app.serving.record_model(tiny_encoder.spec, tiny_encoder.dim)
    again = app.serving.record_model(tiny_encoder.spec, tiny_encoder.dim)
    assert first.id == again.id == app.serving.model_id(tiny_encoder.spec.key)
    assert app.serving.model_row("no such key") is None and app.serving.model_id(None) is None
    with app.library.session() as s:
        assert s.scalar(select(func.count()).select_from(db.Model)) == 1


def test_one_models_folder_per_app(
    app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    fresh = Clipdesk(app.library)
    assert fresh.models is fresh.models  # shared, not one per caller
    assert fresh.models.models_dir == tmp_path / "models"
    assert not fresh.model_ready()  # nothing installed there, no model in the library


def test_the_backend_setting_is_a_verb_that_refuses_unknown_names(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.backends.choice import BACKEND_ENV
    from clipdesk.errors import ClipdeskError

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    app.set_backend("torch-fp32")
    assert app.fixed_backend() == "torch-fp32"
    with pytest.raises(ClipdeskError, match="unknown encoder backend 'bogus'"):
        app.set_backend("bogus")
    assert app.fixed_backend() == "torch-fp32"  # the typo was not stored
    app.set_backend("auto")
    assert app.fixed_backend() is None
