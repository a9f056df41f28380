"""Multi-label tagging (``tag --multi``) with many labels, most of which fit no photo:
the rule on made-up scores, and the trained model end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from clipdesk.library import Library
from clipdesk.services import Clipdesk
from clipdesk.tagging.zero_shot import (
    Classifier,
    multi_label_bar,
    multi_label_mask,
    otsu_threshold,
)
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC

ABSENT = (
    "car", "mountain", "dog", "cat", "bicycle", "tree", "house", "beach", "boat",
    "airplane", "train", "bus", "horse", "bird", "flower", "cake", "pizza", "laptop",
    "phone", "book", "chair", "table", "sofa", "guitar", "piano", "bridge", "river",
    "forest", "sunset", "moon",
)  # fmt: skip


def _many_labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """100 random unit label vectors (dimension 64), a background, and 300 photos each
    near one of the first 10 labels (noisy); labels 10..99 fit no photo."""
    rng = np.random.default_rng(seed)
    labels = rng.normal(size=(100, 64))
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    background = rng.normal(size=64)
    background /= np.linalg.norm(background)
    truth = rng.integers(0, 10, 300)
    photos = labels[truth] + 0.25 * background + rng.normal(size=(300, 64)) / 8.0 * 1.2
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    return photos, labels, background, truth


def test_many_labels_few_per_photo_and_absent_labels_rarely_given() -> None:
    photos, labels, background, truth = _many_labels()
    scale = 13.0  # the trained test model's temperature
    kept = multi_label_mask(photos @ labels.T, photos @ background, scale)
    assert kept.sum(axis=1).mean() <= 2.0
    hits = kept[np.arange(len(truth)), truth].sum()
    assert hits / kept.sum() >= 0.3 and hits / len(truth) >= 0.35
    assert kept[:, 10:].sum() / kept[:, 10:].size < 0.01  # labels that fit nothing
    # The old rule (Otsu per label) on the same scores: dozens of labels per photo.
    probs = 1.0 / (1.0 + np.exp(-scale * (photos @ labels.T - (photos @ background)[:, None])))
    bars = [max(0.5, otsu_threshold(column) or 0.5) for column in probs.T]
    assert (probs >= np.array(bars)).sum(axis=1).mean() > 10


@pytest.mark.parametrize("count", [1, 2, 10, 100, 1000])
def test_no_photo_gets_dozens_of_labels_whatever_the_scores(count: int) -> None:
    rng = np.random.default_rng(count)
    bar = multi_label_bar(count)
    assert bar == pytest.approx(1 / math.sqrt(count + 1))
    most = 1 + math.floor(1 / bar)  # the best label, plus those clearing the bar
    for scale in (1.0, 13.0, 100.0):
        # random scores, and the worst case: every label scores the same
        scores = np.concatenate([rng.uniform(-1, 1, (50, count)), np.full((1, count), 0.3)])
        background = np.concatenate([rng.uniform(-1, 1, 50), [0.0]])
        kept = multi_label_mask(scores, background, scale)
        assert kept.sum(axis=1).max() <= most
        assert kept[-1].sum() == 1  # all alike: only the best (the first), not all 1000


def test_background_wins_gives_no_label_and_two_clear_labels_both_given() -> None:
    labels = np.eye(4, 8)[:, :]  # 4 labels
    background = np.eye(8)[5]
    classifier = Classifier(("a", "b", "c", "d"), labels, background, logit_scale=20.0)
    both = np.array([[1, 1, 0, 0, 0, 0, 0, 0]], float) / math.sqrt(2)
    nothing = np.eye(8)[5:6]
    decided = classifier.multi_label(np.concatenate([both, nothing]))
    assert sorted(j for j, _ in decided[0]) == [0, 1]
    assert all(p >= multi_label_bar(4) for _, p in decided[0])
    assert decided[1] == []
    # The classifier and the mask agree; tags come best first with probabilities.
    photos, vectors, bg, _truth = _many_labels(1)
    big = Classifier(tuple(str(i) for i in range(100)), vectors, bg, 13.0)
    mask = multi_label_mask(photos @ vectors.T, photos @ bg, 13.0)
    for row, chosen in zip(mask, big.multi_label(photos), strict=True):
        assert sorted(j for j, _ in chosen) == np.flatnonzero(row).tolist()
        assert [p for _, p in chosen] == sorted((p for _, p in chosen), reverse=True)
        assert all(0 < p <= 1 for _, p in chosen)


def test_tag_multi_with_the_trained_model_and_labels_that_fit_nothing(
    library: Library, photos: Path
) -> None:
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    spec = ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG)
    app = Clipdesk(library)
    app.preload(ClipEncoder(spec, "cpu"))
    app.add_folders([photos])
    list(app.index(spec, "cpu"))
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir())
    app.create_label_set("many", classes + list(ABSENT))
    list(app.tag("many", multi=True))
    results = app.photo_tags("many")
    assert len(results) == 30
    given = [[tag.label for tag in r.tags] for r in results]
    truth = [Path(r.path).parent.name for r in results]
    assert sum(map(len, given)) / len(given) <= 2.0
    assert max(map(len, given)) <= 1 + math.floor(math.sqrt(len(classes) + len(ABSENT) + 1))
    correct = sum(t in g for t, g in zip(truth, given, strict=True))
    assert correct / sum(map(len, given)) >= 0.4 and correct / len(truth) >= 0.5
    absent_given = sum(label in ABSENT for g in given for label in g)
    # Under 2 % of the 30 x 30 (photo, label) pairs that fit nothing (7 when written; the
    # old Otsu rule gave about half of them).
    assert absent_given <= 18
