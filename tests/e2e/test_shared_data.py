"""Larger real data from ../shared/data, when it is there (skipped otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SHARED_DATA, TINY_CONFIG, TINY_SPEC, run_cli

LARGE = SHARED_DATA / "large-photos"

needs_large = pytest.mark.skipif(
    not LARGE.is_dir(), reason=f"{LARGE} is absent (the shared data set is optional)"
)


@needs_large
def test_large_photos_index_without_failures(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    run_cli("add", str(LARGE), library=library)
    run_cli("index", "--model", TINY_SPEC, "--model-config", str(TINY_CONFIG), library=library)
    status = json.loads(run_cli("status", "--json", library=library).stdout)
    count = len([p for p in LARGE.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")])
    assert status["photos"] == status["indexed"] == count
    assert status["failed"] == []


@needs_large
def test_draft_decoding_keeps_the_embedding(tmp_path: Path) -> None:
    """Decoding 12 MP photos at reduced DCT scale must give the same CLIP vector as a full
    decode followed by the model's own resize (cosine >= 0.99, ViT-B-32 at 224 px)."""
    from clipdesk.imaging import load_rgb, load_rgb_full
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    encoder = ClipEncoder(ModelSpec.parse("ViT-B-32:random"), "cpu")
    photos = sorted(LARGE.glob("*.jpg"))[:8]
    fast = encoder.encode_images([load_rgb(str(p), encoder.decode_side) for p in photos])
    full = encoder.encode_images([load_rgb_full(str(p)) for p in photos])
    cosines = np.sum(fast * full, axis=1)
    assert cosines.min() >= 0.99, cosines
