"""The GUI ring: the real window, offscreen, driven with pytest-qt and the project's
trained model. Every test must leave no worker thread behind."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from PySide6.QtCore import QSettings

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec

os.environ["QT_QPA_PLATFORM"] = "offscreen"
# QSettings (window geometry, last library) go to a private folder, never the user's.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="clipdesk-test-config-")

from tests.helpers import FIXTURES

CLOTHING_TEST = FIXTURES / "clothing-test"
PER_CLASS = 6


@pytest.fixture()
def clothing_photos(tmp_path: Path) -> Path:
    """60 held-out photos: the first 6 of each of the 10 classes."""
    target = tmp_path / "photos"
    for folder in sorted(CLOTHING_TEST.iterdir()):
        if folder.is_dir():
            (target / folder.name).mkdir(parents=True)
            for photo in sorted(folder.glob("*.jpg"))[:PER_CLASS]:
                shutil.copy2(photo, target / folder.name / photo.name)
    return target


@pytest.fixture(scope="session")
def clothing_spec() -> ModelSpec:
    from clipdesk.spec import ModelSpec

    return ModelSpec.parse(
        f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}", FIXTURES / "clothing-clip.json"
    )


@pytest.fixture(scope="session")
def clothing_encoder(clothing_spec: ModelSpec) -> ClipEncoder:
    from clipdesk.models.encoder import ClipEncoder

    return ClipEncoder(clothing_spec, "cpu")


@pytest.fixture()
def services(
    tmp_path: Path, clothing_spec: ModelSpec, clothing_encoder: ClipEncoder
) -> Iterator[Clipdesk]:
    """A library whose model is the trained clothing CLIP (loaded once per session)."""
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    library = Library(tmp_path / "library")
    service = Clipdesk(library)
    service.preload(clothing_encoder)
    service.use_model(clothing_spec, "cpu")
    yield service
    library.close()


@pytest.fixture()
def settings(tmp_path: Path) -> QSettings:
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "clipdesk.ini"), QSettings.Format.IniFormat)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    from PySide6.QtCore import QThreadPool

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        extra = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        busy = QThreadPool.globalInstance().activeThreadCount()
        if not extra and not busy:
            return
        time.sleep(0.05)
    pytest.fail(f"the test left threads running: {extra}, {busy} busy Qt pool threads")
