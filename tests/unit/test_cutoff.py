"""The per-query relevance cutoff on synthetic score distributions (clipdesk.search.cutoff)."""

from __future__ import annotations

import numpy as np
import pytest

from clipdesk.search.cutoff import decide, relevant_count


def _library(
    rng: np.random.Generator, bulk: int, relevant: int, gap: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a library (best first) and its generic-prompt scores."""
    scores = np.concatenate([rng.normal(0.2, 0.05, bulk), rng.normal(0.2 + gap, 0.03, relevant)])
    null = rng.normal(0.3, 0.04, bulk + relevant)
    return np.sort(scores)[::-1], null


def test_a_clear_cluster_is_found_with_and_without_null_scores() -> None:
    rng = np.random.default_rng(1)
    scores, null = _library(rng, 1000, 12)
    assert relevant_count(scores[:200], scores, null_scores=null) == 12
    assert 12 <= relevant_count(scores[:200], scores, fdr=0.05) <= 13
    # Without null scores BH sets the extent too: at the default (lenient) level it keeps
    # all 12 and a few bulk photos, as a false-discovery rate allows.
    assert 12 <= relevant_count(scores[:200], scores) <= 24
    result = decide(scores[:200], scores, null_scores=null)
    assert result.threshold == pytest.approx(scores[11])


def test_pure_noise_returns_nothing_or_next_to_nothing() -> None:
    counts, strict = [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        scores = np.sort(rng.normal(0.25, 0.05, 500))[::-1]
        null = scores + rng.normal(0.0, 0.01, 500)  # an unreadable query scores like the null
        counts.append(relevant_count(scores[:200], scores, null_scores=rng.permutation(null)))
        strict.append(relevant_count(scores[:200], scores, fdr=0.05))
    assert np.mean(np.array(counts) == 0) >= 0.8
    assert np.mean(counts) <= 1.0
    assert np.mean(np.array(strict) == 0) >= 0.9  # BH: P(any rejection | no signal) <= fdr


def test_no_hit_above_the_null_bar_means_no_match() -> None:
    rng = np.random.default_rng(2)
    scores, _ = _library(rng, 500, 5)
    null = np.full(505, scores[0] + 0.01)  # a generic caption beats every hit
    result = decide(scores[:200], scores, null_scores=null)
    assert result.count == 0 and result.threshold is None


def test_the_bar_rises_with_the_library_size() -> None:
    rng = np.random.default_rng(3)
    sample = rng.normal(0.0, 1.0, 400)
    top = np.array([4.2, 4.1, 1.5, 1.4])  # two photos 4 sigma out
    counts = [relevant_count(top, sample, library_size=size) for size in (400, 10_000, 10_000_000)]
    assert counts[0] == 2
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] == 0  # among ten million photos, 4 sigma happens by chance


def test_large_libraries_through_a_sample() -> None:
    rng = np.random.default_rng(4)
    scores, null = _library(rng, 100_000, 40)
    sample = rng.choice(scores, 300, replace=False)
    assert relevant_count(scores[:200], sample, library_size=len(scores), null_scores=null) == 40


def test_robust_to_many_relevant_photos() -> None:
    rng = np.random.default_rng(5)
    scores, null = _library(rng, 300, 200)  # 40 % of the library is relevant
    assert relevant_count(scores[:400], scores, null_scores=null) == 200


def test_invariant_to_the_score_scale_of_a_model() -> None:
    rng = np.random.default_rng(6)
    scores, null = _library(rng, 800, 9, gap=0.2)
    base = relevant_count(scores[:200], scores, null_scores=null)
    for scale, shift in ((0.3, 0.1), (5.0, -2.0)):
        moved = scores * scale + shift
        same = relevant_count(moved[:200], moved, null_scores=null * scale + shift)
        assert same == base


def test_better_top_scores_never_lower_the_count() -> None:
    rng = np.random.default_rng(7)
    scores, null = _library(rng, 600, 6, gap=0.18)
    counts = []
    for lift in (0.0, 0.05, 0.1, 0.2):
        top = scores[:200].copy()
        top[:6] += lift
        counts.append(relevant_count(top, scores, null_scores=null))
    assert counts == sorted(counts)
    assert all(count <= 200 for count in counts)


def test_edge_cases() -> None:
    assert relevant_count([], [0.1, 0.2, 0.3]) == 0
    assert relevant_count([0.5, 0.4], [0.5, 0.4]) == 2  # too few scores to judge: no cutoff
    assert relevant_count([0.5, 0.4], [0.5, 0.4], null_scores=[0.45]) == 1
    assert relevant_count([0.3, 0.3], np.full(50, 0.3)) == 2  # no spread: nothing to judge
    with pytest.raises(ValueError, match="sorted"):
        relevant_count([0.1, 0.5], [0.1, 0.5, 0.2])
    with pytest.raises(ValueError, match="finite"):
        relevant_count([np.nan], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="fdr"):
        relevant_count([0.5], [0.1, 0.2, 0.3], fdr=1.5)


def test_a_library_mostly_of_the_subject_still_finds_it() -> None:
    """Over half the library matches (a library of shoes, "a photo of shoes"): a bulk fitted
    to the median would sit among the matches and nothing would stand out."""
    rng = np.random.default_rng(7)
    relevant = rng.normal(0.75, 0.03, 290)
    rest = rng.normal(0.20, 0.08, 210)
    scores = np.sort(np.concatenate([relevant, rest]))[::-1]
    null = rng.normal(0.25, 0.05, 500)  # a generic caption: well below the matches
    count = relevant_count(scores[:400], scores, null_scores=null)
    assert 270 <= count <= 300
