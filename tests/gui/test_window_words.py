"""How the window words a model's name (the status bar)."""

from __future__ import annotations

import pytest

from clipdesk.gui.words import model_wording


@pytest.mark.parametrize(
    "model,shown",
    [
        ("ViT-B-32:laion2b_s34b_b79k", "ViT-B-32 (laion2b_s34b_b79k)"),
        ("my-tiny:/home/me/weights.safetensors", "my-tiny (weights.safetensors)"),
        ("holiday (imported ViT-B-32)", "holiday (imported ViT-B-32)"),  # no "()" added
        (
            "tiny-clip:random (random weights: tests/benchmarks only)",
            "tiny-clip:random (random weights: tests/benchmarks only)",  # no "))"
        ),
    ],
)
def test_model_names_keep_their_own_words(model: str, shown: str) -> None:
    assert model_wording(model) == shown
