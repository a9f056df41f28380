"""Few-shot refinement (clipdesk.tagging.refine): gains where the photos' vectors separate
the labels, no harm where they do not, labels without feedback untouched, scores that stay
comparable; and ``clipdesk tag`` uses it after the user confirms photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipdesk.library import Library
from clipdesk.services import Clipdesk
from clipdesk.tagging.refine import (
    SIGNIFICANCE,
    Feedback,
    mcnemar_exact,
    moments,
    one_standard_error,
    refine,
    refined_vector,
)
from clipdesk.tagging.zero_shot import multi_label_mask
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC

DIM, CLASSES, SCALE = 48, 6, 50.0


def _unit(array: np.ndarray) -> np.ndarray:
    out: np.ndarray = (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)
    return out


def _world(
    seed: int, separation: float, text_noise: float, per_class: int = 60
) -> dict[str, np.ndarray]:
    """Photos in a cone around a common direction (as CLIP's photo vectors are), one
    centre per class at distance ``separation``; text vectors off to the side (the
    modality gap) with ``text_noise`` blurring which class they name."""
    rng = np.random.default_rng(seed)
    common = _unit(rng.normal(size=DIM))
    centres = rng.normal(size=(CLASSES, DIM)) / np.sqrt(DIM)
    truth = np.repeat(np.arange(CLASSES), per_class)
    noise = rng.normal(size=(len(truth), DIM)) / np.sqrt(DIM)
    photos = _unit(3 * common + separation * centres[truth] + noise)
    gap = _unit(rng.normal(size=DIM))
    text = _unit(2 * gap + centres + text_noise * rng.normal(size=(CLASSES, DIM)) / np.sqrt(DIM))
    background = _unit(2 * gap + rng.normal(size=DIM) / np.sqrt(DIM))
    return {"photos": photos, "truth": truth, "text": text, "background": background}


def _split_and_refine(
    world: dict[str, np.ndarray], shots: int, seed: int
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    photos, truth = world["photos"], world["truth"]
    pool = np.concatenate(
        [rng.permutation(np.flatnonzero(truth == c))[:shots] for c in range(CLASSES)]
    )
    held = np.setdiff1d(np.arange(len(truth)), pool)
    feedback = [
        Feedback(tuple(int(i) for i in pool[truth[pool] == c]), photos[pool[truth[pool] == c]])
        for c in range(CLASSES)
    ]
    result = refine(
        world["text"],
        world["background"],
        SCALE,
        moments(photos),
        feedback,
        {int(i): photos[i] for i in pool},
    )
    return result.vectors, photos[held], truth[held], np.array([result.strength])


def _top1(vectors: np.ndarray, photos: np.ndarray, truth: np.ndarray) -> float:
    return float(((photos @ vectors.T).argmax(axis=1) == truth).mean())


def test_the_refinement_gains_where_the_photos_separate_the_labels() -> None:
    for seed in range(3):
        world = _world(seed, separation=2.0, text_noise=8.0)
        vectors, held, truth, strength = _split_and_refine(world, shots=10, seed=seed)
        before, after = _top1(world["text"], held, truth), _top1(vectors, held, truth)
        assert strength[0] > 0
        assert after >= before + 0.10, (before, after)


@pytest.mark.parametrize("shots", [1, 5, 10])
def test_no_harm_where_the_photos_do_not_separate_the_labels(shots: int) -> None:
    for seed in range(4):
        # the classes' photos all come from one place: nothing to learn from them
        world = _world(seed, separation=0.0, text_noise=1.0)
        rng = np.random.default_rng(seed + 100)
        world["truth"] = rng.permutation(world["truth"])
        vectors, held, truth, _ = _split_and_refine(world, shots=shots, seed=seed)
        assert _top1(vectors, held, truth) >= _top1(world["text"], held, truth) - 0.01
        background = held @ world["background"]
        before = multi_label_mask(held @ world["text"].T, background, SCALE)
        after = multi_label_mask(held @ vectors.T, background, SCALE)
        rows = np.arange(len(truth))
        assert after[rows, truth].mean() >= before[rows, truth].mean() - 0.01
        assert after.sum() <= before.sum() * 1.01 + 1


def test_a_label_without_feedback_is_unchanged_and_refined_scores_stay_comparable() -> None:
    world = _world(0, separation=2.0, text_noise=8.0)
    photos, truth, text = world["photos"], world["truth"], world["text"]
    confirmed = np.flatnonzero(truth == 0)[:8]
    rejected = np.flatnonzero(truth == 1)[:8]
    feedback = [Feedback()] * CLASSES
    feedback[0] = Feedback(
        tuple(int(i) for i in confirmed),
        photos[confirmed],
        tuple(int(i) for i in rejected),
        photos[rejected],
    )
    feedback[2] = Feedback(
        tuple(int(i) for i in np.flatnonzero(truth == 2)[:8]), photos[truth == 2][:8]
    )
    lib = moments(photos)
    result = refine(
        text,
        world["background"],
        SCALE,
        lib,
        feedback,
        {int(i): photos[i] for i in range(len(photos))},
    )
    assert result.strength > 0
    for j in (1, 3, 4, 5):
        assert np.array_equal(result.vectors[j], text[j])
    for j in (0, 2):
        assert not np.allclose(result.vectors[j], text[j])
        # over the library, the label's scores keep their zero-shot mean and spread
        new, old = photos @ result.vectors[j], photos @ text[j]
        assert new.mean() == pytest.approx(old.mean(), abs=1e-4)
        assert new.std() == pytest.approx(old.std(), rel=0.02)
        # ... and the confirmed class scores higher, the rejected one lower, than before
        assert new[truth == j].mean() > old[truth == j].mean()
    assert (photos @ result.vectors[0])[truth == 1].mean() < (photos @ text[0])[truth == 1].mean()


def test_strength_zero_and_no_feedback_leave_the_text_vectors() -> None:
    world = _world(1, separation=3.0, text_noise=1.0)
    lib = moments(world["photos"])
    direction = world["photos"][:5].mean(axis=0) - lib.mean
    assert np.array_equal(refined_vector(world["text"][0], direction, 0.0, lib), world["text"][0])
    result = refine(world["text"], world["background"], SCALE, lib, [Feedback()] * CLASSES, {})
    assert result.strength == 0 and np.array_equal(result.vectors, world["text"])
    # one confirmed photo per label says nothing of a label's spread: no refinement yet
    one = [Feedback((c,), world["photos"][[c * 60]]) for c in range(CLASSES)]
    vectors = {c: world["photos"][c * 60] for c in range(CLASSES)}
    assert np.array_equal(
        refine(world["text"], world["background"], SCALE, lib, one, vectors).vectors, world["text"]
    )


def test_the_one_standard_error_rule_takes_a_strength_only_when_the_marks_ask_for_it() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    noisy = {0.0: base, 1.0: base + np.tile([0.5, -0.5], 20) + 0.01}  # gain 0.01, SE 0.08
    assert one_standard_error(noisy) == 0.0
    clear = {0.0: base, 1.0: base + 0.5 + rng.normal(scale=0.1, size=40)}
    assert one_standard_error(clear) == 1.0


def _confirm_first(world: dict[str, np.ndarray], shots: int, labels: int) -> list[Feedback]:
    """The first ``shots`` photos of each of the first ``labels`` classes confirmed."""
    photos, truth = world["photos"], world["truth"]
    chosen = [np.flatnonzero(truth == c)[:shots] for c in range(labels)]
    return [Feedback(tuple(int(i) for i in rows), photos[rows]) for rows in chosen] + [
        Feedback()
    ] * (CLASSES - labels)


def test_a_gain_that_is_not_significant_keeps_zero_shot_exactly() -> None:
    world = _world(1, separation=2.0, text_noise=8.0)
    photos = world["photos"]
    lib, vectors = moments(photos), {i: photos[i] for i in range(len(photos))}
    # three confirmed photos of two labels: leave-one-out favours a refinement, but six
    # marks cannot make it significant
    few = refine(
        world["text"], world["background"], SCALE, lib, _confirm_first(world, 3, 2), vectors
    )
    assert max(few.scores, key=lambda r: few.scores[r]) > 0
    assert SIGNIFICANCE < few.p_value < 1.0  # a strength was chosen, then not taken
    assert few.strength == 0 and np.array_equal(few.vectors, world["text"])
    # ten of each make the same gain significant: the labels are refined
    many = refine(
        world["text"], world["background"], SCALE, lib, _confirm_first(world, 10, 2), vectors
    )
    assert many.p_value <= SIGNIFICANCE and many.strength > 0
    assert not np.allclose(many.vectors[:2], world["text"][:2])


def test_mcnemar_exact_is_the_binomial_tail_of_the_discordant_marks() -> None:
    def marks(wins: int, losses: int, ties: int) -> tuple[np.ndarray, np.ndarray]:
        refined = np.array([True] * wins + [False] * losses + [True] * ties)
        zero_shot = np.array([False] * wins + [True] * losses + [True] * ties)
        return refined, zero_shot

    assert mcnemar_exact(*marks(5, 0, 20)) == pytest.approx(1 / 32)  # ties do not count
    assert mcnemar_exact(*marks(4, 0, 0)) == pytest.approx(1 / 16)
    assert mcnemar_exact(*marks(6, 2, 3)) == pytest.approx((28 + 8 + 1) / 256)
    assert mcnemar_exact(*marks(0, 3, 0)) == 1.0
    assert mcnemar_exact(*marks(0, 0, 9)) == 1.0


# Names the trained clothing model never saw (it knows English clothing words): its
# zero-shot guesses are poor, while its photo vectors do separate the classes.
USER_NAMES = {
    "dress": "Kleid",
    "hat": "Mütze",
    "pants": "Hose",
    "shoes": "Schuhe",
    "shorts": "kurze Hose",
}


def test_clipdesk_tag_learns_from_confirmed_photos(library: Library, photos: Path) -> None:
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    spec = ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG)
    app = Clipdesk(library)
    app.preload(ClipEncoder(spec, "cpu"))
    app.add_folders([photos])
    list(app.index(spec, "cpu"))
    app.create_label_set("mine", list(USER_NAMES.values()))

    def correct_on(paths: list[Path]) -> int:
        results = {Path(r.path): r for r in app.photo_tags("mine")}
        return sum(
            bool(results[p].tags) and results[p].tags[0].label == USER_NAMES[p.parent.name]
            for p in paths
        )

    list(app.tag("mine"))
    by_class = {c: sorted((photos / c).glob("*.jpg")) for c in USER_NAMES}
    held_out = [paths[-1] for paths in by_class.values()]
    before = correct_on(held_out)
    untouched = {r.path: r.tags for r in app.photo_tags("mine")}
    # the user confirms two photos of each class
    for cls, paths in by_class.items():
        found, missing = app.photos_at(paths[:2])
        assert not missing
        app.mark_tag(USER_NAMES[cls], [p.id for p in found], "confirmed")
    list(app.tag("mine"))
    after = correct_on(held_out)
    assert after > before, (before, after)
    assert any(untouched[r.path] != r.tags for r in app.photo_tags("mine"))
