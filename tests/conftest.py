from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import FIXTURE_PHOTOS, TINY_CONFIG, TINY_SPEC

if TYPE_CHECKING:  # the fixtures import these when used: collecting stays light
    from clipdesk.library import Library
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests never touch the user's real models or libraries.
os.environ.setdefault("CLIPDESK_MODELS_DIR", tempfile.mkdtemp(prefix="clipdesk-test-models-"))
os.environ.pop("CLIPDESK_LIBRARY", None)
# Correctness tests compare against open_clip in fp32; the faster backends have their own
# faithfulness tests (tests/unit/test_backends.py), which set their backend explicitly.
os.environ.setdefault("CLIPDESK_BACKEND", "torch-fp32")
# Exporting after the first full index (a child process, seconds) is tested where it is
# the subject; elsewhere a search through an export would compare OpenVINO, not torch.
os.environ.setdefault("CLIPDESK_AUTO_EXPORT", "0")


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Tests that call ``clipdesk.cli.main.main`` in this process get its logging set-up (the
    "clipdesk" logger's level, a root handler); later tests must not inherit it (caplog
    would then see none of clipdesk's warnings)."""
    root, ours = logging.getLogger(), logging.getLogger("clipdesk")
    handlers, root_level, our_level = list(root.handlers), root.level, ours.level
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    ours.setLevel(our_level)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A private copy of the 30 committed CC0 photos (3 per clothing class)."""
    target = tmp_path / "photos"
    shutil.copytree(FIXTURE_PHOTOS, target, ignore=shutil.ignore_patterns("LICENSE"))
    return target


@pytest.fixture()
def library(tmp_path: Path) -> Iterator[Library]:
    from clipdesk.library import Library

    lib = Library(tmp_path / "library")
    yield lib
    lib.close()


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    from clipdesk.spec import ModelSpec

    return ModelSpec.parse(TINY_SPEC, TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_spec: ModelSpec) -> ClipEncoder:
    from clipdesk.models.encoder import ClipEncoder

    return ClipEncoder(tiny_spec, "cpu")


@pytest.fixture()
def app(library: Library, tiny_encoder: ClipEncoder) -> Clipdesk:
    """A Clipdesk service on a fresh library, with the session's tiny model preloaded."""
    from clipdesk.services import Clipdesk

    service = Clipdesk(library)
    service.preload(tiny_encoder)  # loaded once per session
    return service


@pytest.fixture(scope="session")
def clothing_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's trained model, exported (both towers, OpenVINO IR) once per session,
    judged on a quarter of its held-out photos."""
    import numpy as np

    from clipdesk.imaging import load_rgb
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.models.export import export_model
    from clipdesk.spec import ModelSpec
    from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, FIXTURES

    encoder = ClipEncoder(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG), "cpu")
    paths = sorted((FIXTURES / "clothing-test").rglob("*.jpg"))[::4]
    probe = np.stack(
        [encoder.preprocess_image(load_rgb(str(p), encoder.decode_side)) for p in paths]
    )
    return export_model(encoder, tmp_path_factory.mktemp("exports"), probe=probe)
