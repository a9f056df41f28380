"""The review queue: which photos a label's queue holds and in what order, on made-up
vectors in a real library (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.library import tags as tag_rule
from clipdesk.tagging.review import NEAR_AT_LEAST, review_order, review_queue, select_queue
from clipdesk.tagging.zero_shot import Classifier, create_label_set, multi_label_bar

SCALE = 20.0  # the model's temperature in these made-up examples


def _unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def _classifier() -> Classifier:
    # three labels along the first three axes, the background along the fourth
    return Classifier(
        ("cat", "dog", "car"),
        np.eye(4, dtype=np.float32)[:3],
        np.eye(4, dtype=np.float32)[3],
        SCALE,
    )


def _library_with(library: Library, vectors: np.ndarray) -> list[int]:
    with library.session() as s:
        root = db.Root(path="/photos", added_at=0.0)
        model = db.Model(key="made-up", spec="made-up", dim=4, created_at=0.0)
        s.add_all([root, model])
        s.flush()
        ids = []
        for i, vector in enumerate(vectors):
            photo = db.Photo(
                root_id=root.id,
                path=f"/photos/{i:02d}.jpg",
                size=1,
                mtime_ns=0,
                fingerprint=f"fp{i:02d}",
                taken_at=0.0,
                taken_from_exif=False,
            )
            s.add(photo)
            s.add(
                db.Embedding(fingerprint=f"fp{i:02d}", model_id=model.id, vector=vector.tobytes())
            )
            s.flush()
            ids.append(photo.id)
        s.commit()
    create_label_set(library, "pets", ["cat", "dog", "car"])
    return ids


def test_orders_surest_by_probability_least_sure_by_distance_to_the_bar() -> None:
    bar = 0.5
    p = np.array([0.9, 0.45, 0.1, 0.7, 0.26])
    assert review_order(p, bar, "surest").tolist() == [0, 3, 1, 4, 2]
    # |log p - log 0.5|: 0.59, 0.11, 1.61, 0.34, 0.65
    assert review_order(p, bar, "least_sure").tolist() == [1, 3, 0, 4, 2]
    with pytest.raises(ClipdeskError):
        review_order(p, bar, "random")


def test_the_queue_holds_given_said_and_the_best_nearly_given() -> None:
    labels = 3  # a blind guess: 1/4
    p = np.array([0.9, 0.3, 0.2, 0.26, 0.6, 0.05] + [0.3] * 20)
    given = np.array([True, False, False, False, True, False] + [False] * 20)
    said = np.array([False, False, False, False, False, True] + [False] * 20)
    chosen = select_queue(p, given, said, labels)
    assert chosen[[0, 4, 5]].all()  # the given two, and the one the user said something of
    assert not chosen[2]  # below a blind guess
    near = np.flatnonzero(chosen & ~given & ~said)
    assert len(near) == NEAR_AT_LEAST  # 21 photos above a blind guess, a strip's worth shown
    assert all(p[i] >= 0.26 for i in near)


def test_review_queue_on_stored_vectors(library: Library) -> None:
    rng = np.random.default_rng(0)
    rows = []
    # 6 clear cats, 4 photos between cat and the background, 10 dogs
    for _ in range(6):
        rows.append(np.array([1.0, 0.05, 0.0, 0.3]) + rng.normal(0, 0.01, 4))
    for weight in (1.02, 0.98, 0.95, 0.92):
        rows.append(np.array([weight, 0.0, 0.0, 1.0]) + rng.normal(0, 0.01, 4))
    for _ in range(10):
        rows.append(np.array([0.0, 1.0, 0.05, 0.2]) + rng.normal(0, 0.01, 4))
    vectors = _unit(np.array(rows))
    ids = _library_with(library, vectors)
    classifier = _classifier()
    model_id = 1
    tag_rule.set_marks(library, [ids[1]], "cat", tag_rule.REJECTED)

    queue = review_queue(library, classifier, model_id, "pets", "cat", "surest")
    by_id = {item.photo_id: item for item in queue.items}
    assert queue.bar == pytest.approx(multi_label_bar(3))
    assert all(by_id[i].given for i in ids[:6])  # the clear cats
    assert by_id[ids[1]].mark == "rejected" and by_id[ids[0]].mark is None
    assert not any(i in by_id for i in ids[10:])  # no dog is nearly a cat
    probabilities = [item.probability for item in queue.items]
    assert probabilities == sorted(probabilities, reverse=True)
    assert queue.reviewed == 1

    unsure = review_queue(library, classifier, model_id, "pets", "cat", "least_sure")
    assert {item.photo_id for item in unsure.items} == set(by_id)
    distances = [abs(math.log(item.probability) - math.log(queue.bar)) for item in unsure.items]
    assert distances == sorted(distances)
    assert unsure.items[0].photo_id in ids[6:10]  # a photo between cat and the background
