"""Zero-shot tagging: the decision rules on made-up vectors, and the service end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from clipdesk.errors import ClipdeskError
from clipdesk.library import db
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from clipdesk.tagging.zero_shot import Classifier, otsu_threshold, prompt_templates


def _unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    unit: np.ndarray = array / np.linalg.norm(array, axis=1, keepdims=True)
    return unit


def _classifier() -> Classifier:
    labels = _unit([[1, 0, 0, 0], [0, 1, 0, 0]])
    background = _unit([[0, 0, 1, 0]])[0]
    return Classifier(("cat", "dog"), labels, background, logit_scale=100.0)


def test_single_label_picks_best_or_none_when_background_wins() -> None:
    photos = _unit([[0.9, 0.1, 0.2, 0], [0.1, 0.8, 0.3, 0], [0.1, 0.1, 0.9, 0.2]])
    decided = _classifier().single(photos)
    assert [d[0][0] if d else None for d in decided] == [0, 1, None]
    assert 0.5 < decided[0][0][1] <= 1.0


def test_multi_label_thresholds_come_from_each_labels_distribution() -> None:
    rng = np.random.default_rng(0)
    # 40 photos: cat strongly present in 10, dog weakly present everywhere.
    photos = np.zeros((40, 4), np.float32)
    photos[:, 2] = 1.0  # background-ish
    photos[:10, 0] = 2.0
    photos[:, 1] = 1.05 + rng.normal(0, 0.01, 40)
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    classifier = _classifier()
    probabilities = classifier.label_probabilities(photos)
    thresholds = classifier.thresholds(probabilities)
    decided = classifier.multi(probabilities, thresholds)
    cats = [i for i, d in enumerate(decided) if any(j == 0 for j, _ in d)]
    assert cats == list(range(10))
    assert thresholds[0] >= 0.5 and thresholds[1] >= 0.5
    for chosen in decided:
        assert [s for _, s in chosen] == sorted((s for _, s in chosen), reverse=True)


def test_otsu_splits_two_groups_and_refuses_a_constant() -> None:
    values = np.array([0.1, 0.12, 0.11, 0.9, 0.88, 0.91])
    split = otsu_threshold(values)
    assert split is not None and 0.12 < split < 0.88
    assert otsu_threshold(np.array([0.5, 0.5, 0.5])) is None


def test_prompt_sets() -> None:
    ensemble = prompt_templates("ensemble")
    assert len(ensemble) > 80 and "a photo of my {}." in ensemble
    assert prompt_templates("single") == ("a photo of a {}.",)
    with pytest.raises(ClipdeskError):
        prompt_templates("many")


def _indexed(app: Clipdesk, photos: Path, spec: ModelSpec) -> None:
    app.add_folders([photos])
    list(app.index(spec, "cpu"))


def test_tagging_stores_tags_with_confidence_set_and_model(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    app.create_label_set("clothes", ["hat", "shoes", "dress"])
    progress = list(app.tag("clothes", multi=True))
    assert progress[-1].done == progress[-1].total == 30
    results = app.photo_tags("clothes")
    assert len(results) == 30
    with app.library.session() as s:
        rows = s.execute(select(db.PhotoTag)).scalars().all()
        model_id = s.scalar(select(db.Model.id))
    assert rows and all(r.model_id == model_id and 0 < r.score <= 1 for r in rows)
    assert sum(len(r.tags) for r in results) == len(rows)
    counts = app.status().tags
    assert set(counts) <= {"hat", "shoes", "dress"} and sum(counts.values()) == len(rows)
    # Search restricted to a tag returns only photos with that tag.
    label, _count = next(iter(counts.items()))
    tagged = {r.path for r in results if any(t.label == label for t in r.tags)}
    hits = app.search_text("something", k=30, tag=label)
    assert {h.path for h in hits} == tagged
    with pytest.raises(ClipdeskError, match=r"no tag named 'hats' \(tags: .*hat"):
        app.search_text("something", k=30, tag="hats")  # a typo says so, not "no results"


def test_retagging_replaces_and_folder_limits(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    app.create_label_set("two", ["hat", "shoes"])
    list(app.tag("two", folder=photos / "hat"))
    only_hats = app.photo_tags("two", photos / "hat")
    assert len(only_hats) == 3
    list(app.tag("two", folder=photos / "hat"))
    with app.library.session() as s:
        count = s.scalar(select(func.count()).select_from(db.PhotoTag))
    assert count == sum(len(r.tags) for r in only_hats) <= 3  # single-label: at most one each
    with pytest.raises(ClipdeskError, match="not inside a library folder"):
        list(app.tag("two", folder="/somewhere/else"))
    a_photo = next((photos / "hat").glob("*.jpg"))
    with pytest.raises(ClipdeskError, match="is a file: tag a folder"):
        list(app.tag("two", folder=a_photo))  # said "0 of 0 photos tagged" before
    with pytest.raises(ClipdeskError, match="no label set named"):
        list(app.tag("three"))


def test_label_sets_create_list_replace_delete(app: Clipdesk) -> None:
    app.create_label_set("trip", ["beach", " hiking ", "beach", ""])
    assert app.label_sets() == {"trip": ["beach", "hiking"]}
    app.create_label_set("trip", ["museum"])
    assert app.label_sets() == {"trip": ["museum"]}
    app.delete_label_set("trip")
    assert app.label_sets() == {}
    with pytest.raises(ClipdeskError):
        app.create_label_set("empty", ["  "])


def test_the_ensemble_is_the_clip_papers_80_templates() -> None:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from clipdesk.tagging.zero_shot import CLIP_IMAGENET_TEMPLATES

    assert tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES) == CLIP_IMAGENET_TEMPLATES
