"""How tagging learns from you: each label's classifier refined by the photos you confirmed
and rejected for it, on their stored vectors (nothing is embedded again).

The method is relevance feedback in the style of Rocchio (1971), the same idea Tip-Adapter
(Zhang et al., 2022) and the CLIP paper's few-shot probes build on: the label's text vector
is moved towards the photos you confirmed (or added by hand) and away from those you
rejected. Three things keep it honest:

- *Modality gap.* Photo vectors sit in their own cone, far from the text vectors, so the raw
  mean of confirmed photos would mostly add "looks like a photo". The direction used is the
  mean of the confirmed photos less the mean of the rejected ones, each taken relative to
  the library's mean photo vector, with the part along that mean removed. It therefore
  adds nothing to the average score of the label over the library: it only reorders which
  photos score high.
- *Comparable scores.* The refined vector is scaled so that, over the whole library, the
  label's scores keep the mean and the spread of its zero-shot scores (from the library's
  mean vector and covariance). A label you gave feedback to does not start winning every
  photo because its scale moved, labels without feedback stay exactly as they were, and the
  softmax, the background and the multi-label bar (``zero_shot.multi_label_bar``) keep their
  meaning.
- *Strength from your own feedback, taken only when significant.* The image direction is
  measured in units of the text part's spread over the library, and its weight ``r``
  (0 = zero-shot, then 1/8 ... 32, doubling) is chosen *leave-one-out*: each marked photo
  is judged by a classifier refined from the other marks only (its confirmed label's
  log-probability, or for a rejection the log of one less the rejected label's
  probability, in the same softmax over the labels and the background that
  ``clipdesk tag`` uses). By the one-standard-error rule (Breiman
  et al., CART, 1984) the weakest ``r`` within one standard error of the best is taken, so
  zero-shot stays unless your marks clearly ask for more. A label's direction is further
  shrunk by ``n/(n + k0)`` for its ``n`` marked photos, ``k0`` being the spread of the
  confirmed photos around their label's mean over the squared distance of those means
  from the library's mean (pooled over the labels, less sampling noise, as in a
  James-Stein estimate), so one odd confirmation moves a label less than ten consistent
  ones. Until some label has two confirmed photos there is no spread to measure, and
  nothing changes. Then the strength chosen must beat zero-shot significantly on the
  same leave-one-out marks, judged as ``clipdesk tag`` would (a confirmed label wins,
  or with ``--multi`` is given; a rejected one does not): McNemar's exact test (1947),
  one-sided at the conventional 5 % level, on the marks one classifier gets right and
  the other wrong, for the single-label and the ``--multi`` verdicts alike (an
  intersection-union test, Berger 1982, so still a 5 % test). Otherwise the label set
  keeps zero-shot exactly: a gain the marks cannot tell from luck is not taken, and at
  least five marks must go the refined way before any is.

Where the model's names already fit your photos better than the photos separate from each
other (the project's trained clothing model), or where the photos separate the labels no
better than the names (a weak model), zero-shot stays: on the benchmark's held-out photos
no seed lost top-1, and ``--multi`` precision and recall at most 1.6 points. Where your
labels are words the model reads vaguely, ten confirmed photos per label gain 11-17
points of top-1 on average, five gain 7-8 (fewer marks are less often significant;
bench/bench_refine.py). Imported tags are not used: they are another app's word, not
yours on these photos.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np
from sqlalchemy import select

from clipdesk.library import Library, db
from clipdesk.library import tags as tag_rule
from clipdesk.tagging.zero_shot import multi_label_bar

# The weights of the image direction tried, in units of the text part's spread.
STRENGTHS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# The conventional one-sided level of McNemar's test that the refinement must pass.
SIGNIFICANCE = 0.05
_LOO_LIMIT = 600  # marked photos judged leave-one-out at most (a deterministic subset)


@dataclass(frozen=True)
class LibraryMoments:
    """The mean and covariance of the library's photo vectors under one model."""

    mean: np.ndarray  # (D,)
    covariance: np.ndarray  # (D, D)
    count: int


def moments(vectors: np.ndarray) -> LibraryMoments:
    data = np.asarray(vectors, np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    return LibraryMoments(mean, centred.T @ centred / max(len(data) - 1, 1), len(data))


def accumulate_moments(chunks: Iterable[np.ndarray]) -> LibraryMoments:
    """:func:`moments` over (n, D) chunks, without holding them all."""
    total = 0
    sums: np.ndarray | None = None
    products: np.ndarray | None = None
    for chunk in chunks:
        block = np.asarray(chunk, np.float32)
        if not len(block):
            continue
        sums = block.sum(axis=0, dtype=np.float64) if sums is None else sums + block.sum(axis=0)
        outer = (block.T @ block).astype(np.float64)  # float32 products, summed in float64
        products = outer if products is None else products + outer
        total += len(block)
    if sums is None or products is None:
        raise ValueError("no vectors")
    mean = sums / total
    covariance = (products - total * np.outer(mean, mean)) / max(total - 1, 1)
    return LibraryMoments(mean, covariance, total)


@dataclass(frozen=True)
class Feedback:
    """The user's word on one label: vectors of confirmed (or manual) and rejected photos,
    with the photo ids they came from (for leave-one-out)."""

    positive_ids: tuple[int, ...] = ()
    positives: np.ndarray | None = None  # (n, D)
    negative_ids: tuple[int, ...] = ()
    negatives: np.ndarray | None = None  # (m, D)

    @property
    def size(self) -> int:
        return len(self.positive_ids) + len(self.negative_ids)


@dataclass(frozen=True)
class Refinement:
    vectors: np.ndarray  # (L, D), rows of labels without feedback untouched
    strength: float  # the r chosen leave-one-out (0: zero-shot kept)
    k0: float  # the shrinkage constant estimated from the marks
    scores: dict[float, float]  # leave-one-out mean log-likelihood per strength
    # McNemar's exact one-sided p-value of the chosen strength against zero-shot, on the
    # marks judged leave-one-out (1.0 when no strength above zero was chosen)
    p_value: float = 1.0


class _Products:
    """Sums of the marked photos' vectors and covariance products, computed once, so that
    every refined vector (and every leave-one-out variant) costs O(D): C is symmetric,
    so C applied to a mean of vectors is the mean of their C products."""

    def __init__(self, lib: LibraryMoments, feedback: Sequence[Feedback]) -> None:
        c = lib.covariance
        self.mean = lib.mean
        self.c_mean = c @ lib.mean
        self.unit = lib.mean / np.linalg.norm(lib.mean)
        self.c_unit = c @ self.unit
        # per label, for confirmed then rejected: (ids -> row, rows, C rows, sum, C sum)
        blocks = [
            rows for fb in feedback for rows in (fb.positives, fb.negatives) if rows is not None
        ]
        stacked = np.concatenate([np.asarray(r, np.float64) for r in blocks]) if blocks else None
        c_stacked = None if stacked is None else stacked @ c
        self.sides: list[list[tuple[dict[int, int], np.ndarray, np.ndarray] | None]] = []
        start = 0
        for fb in feedback:
            sides: list[tuple[dict[int, int], np.ndarray, np.ndarray] | None] = []
            for ids, rows in ((fb.positive_ids, fb.positives), (fb.negative_ids, fb.negatives)):
                if rows is None or not len(ids) or stacked is None or c_stacked is None:
                    sides.append(None)
                    continue
                end = start + len(rows)
                sides.append(
                    (
                        {pid: i for i, pid in enumerate(ids)},
                        stacked[start:end],
                        c_stacked[start:end],
                    )
                )
                start = end
            self.sides.append(sides)


def _direction(
    products: _Products, label: int, skip: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rocchio direction (confirmed mean - rejected mean, relative to the library mean),
    its covariance product and the number of photos it rests on, without photo ``skip``."""
    direction = np.zeros_like(products.mean)
    c_direction = np.zeros_like(products.mean)
    count = 0
    for side, sign in zip(products.sides[label], (1.0, -1.0), strict=True):
        if side is None:
            continue
        index, rows, c_rows = side
        total, c_total, n = rows.sum(axis=0), c_rows.sum(axis=0), len(rows)
        if skip is not None and skip in index:
            total, c_total, n = total - rows[index[skip]], c_total - c_rows[index[skip]], n - 1
        if n:
            direction += sign * (total / n - products.mean)
            c_direction += sign * (c_total / n - products.c_mean)
            count += n
    return direction, c_direction, count


def refined_vector(
    text: np.ndarray,
    direction: np.ndarray,
    weight: float,
    lib: LibraryMoments,
) -> np.ndarray:
    """The text vector moved by ``weight`` (in units of its own spread) along ``direction``
    (made orthogonal to the library mean), scaled so that the label's scores over the
    library keep their zero-shot mean and spread."""
    products = _Products(lib, [])
    c = lib.covariance
    text = np.asarray(text, np.float64)
    return _refined(text, c @ text, direction, c @ direction, weight, products)


def _refined(
    text: np.ndarray,
    c_text: np.ndarray,
    direction: np.ndarray,
    c_direction: np.ndarray,
    weight: float,
    p: _Products,
) -> np.ndarray:
    """:func:`refined_vector` from covariance products (``c_x`` = C x)."""
    along_by = float(p.unit @ text)
    along, c_along = p.unit * along_by, p.c_unit * along_by
    across, c_across = text - along, c_text - c_along
    move_by = float(p.unit @ direction)
    move, c_move = direction - p.unit * move_by, c_direction - p.c_unit * move_by
    move_spread = np.sqrt(max(float(move @ c_move), 0.0))
    if weight <= 0 or move_spread <= 0:
        return text
    k = weight * np.sqrt(max(float(across @ c_across), 0.0)) / move_spread
    moved, c_moved = across + k * move, c_across + k * c_move
    # var(x.(along + a*moved)) = var(x.text): a quadratic in a, its positive root.
    qa = float(moved @ c_moved)
    qb = 2.0 * float(along @ c_moved)
    qc = float(along @ c_along) - float(text @ c_text)
    root = (-qb + np.sqrt(max(qb * qb - 4 * qa * qc, 0.0))) / (2 * qa)
    return np.asarray(along + root * moved)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return np.asarray(shifted - np.log(np.exp(shifted).sum()))


def _shrink_constant(feedback: Sequence[Feedback], lib: LibraryMoments) -> float:
    """k0 = within-label spread / squared distance of the label means from the library
    mean, pooled over labels with two or more confirmed photos (infinite, i.e. no refinement,
    when none has)."""
    within = between = 0.0
    for fb in feedback:
        if fb.positives is None or len(fb.positive_ids) < 2:
            continue
        rows = np.asarray(fb.positives, np.float64)
        centre = rows.mean(axis=0)
        n = len(rows)
        spread = float(((rows - centre) ** 2).sum() / (n - 1))
        within += spread
        # the squared distance, less its expected inflation by sampling noise
        between += max(float(((centre - lib.mean) ** 2).sum()) - spread / n, 0.0)
    if within <= 0:
        return float("inf")  # no label has two confirmed photos: nothing to measure
    return within / between if between > 0 else float("inf")


def refine(
    text_vectors: np.ndarray,
    background: np.ndarray,
    logit_scale: float,
    lib: LibraryMoments,
    feedback: Sequence[Feedback],
    photo_vectors: dict[int, np.ndarray],
) -> Refinement:
    """Refine each label's vector from its ``feedback`` (one per label, in order);
    ``photo_vectors``: every marked photo's stored vector, by photo id."""
    text_vectors = np.asarray(text_vectors, np.float64)
    background = np.asarray(background, np.float64)
    if not any(fb.size for fb in feedback) or lib.count < 2:
        return Refinement(text_vectors.astype(np.float32), 0.0, 0.0, {})
    k0 = _shrink_constant(feedback, lib)
    if not np.isfinite(k0):
        return Refinement(text_vectors.astype(np.float32), 0.0, k0, {})

    def weight_of(count: int, strength: float) -> float:
        return strength * count / (count + k0)

    products = _Products(lib, feedback)
    c_text = text_vectors @ lib.covariance
    directions = [_direction(products, j) for j in range(len(feedback))]
    # (photo id, label, +1 confirmed / -1 rejected) for every mark, judged leave-one-out
    marks = sorted(
        {
            (pid, j, sign)
            for j, fb in enumerate(feedback)
            for ids, sign in ((fb.positive_ids, 1), (fb.negative_ids, -1))
            for pid in ids
        }
    )
    if len(marks) > _LOO_LIMIT:
        picked = np.random.default_rng(0).choice(len(marks), _LOO_LIMIT, replace=False)
        marks = [marks[i] for i in sorted(picked)]
    marked_labels: dict[int, list[int]] = {}
    for j, fb in enumerate(feedback):
        for pid in (*fb.positive_ids, *fb.negative_ids):
            marked_labels.setdefault(pid, []).append(j)

    per_mark: dict[float, np.ndarray] = {}
    right: dict[float, np.ndarray] = {}  # per mark: (single-label right, --multi right)
    bar = float(np.log(multi_label_bar(len(text_vectors))))
    candidates: dict[float, np.ndarray] = {}
    for strength in STRENGTHS:
        vectors = np.stack(
            [
                _refined(t, c_text[j], d, cd, weight_of(n, strength), products) if n else t
                for j, (t, (d, cd, n)) in enumerate(zip(text_vectors, directions, strict=True))
            ]
        )
        judged, correct = [], []
        for pid, j, sign in marks:
            x = np.asarray(photo_vectors[pid], np.float64)
            rows = x @ vectors.T
            for other in marked_labels[pid]:  # this photo's marks left out
                d, cd, n = _direction(products, other, skip=pid)
                w = _refined(
                    text_vectors[other], c_text[other], d, cd, weight_of(n, strength), products
                )
                rows[other] = x @ w
            logp = _log_softmax(logit_scale * np.append(rows, x @ background))
            p = float(np.exp(logp[j]))
            judged.append(logp[j] if sign > 0 else float(np.log1p(-min(p, 1 - 1e-12))))
            # what `clipdesk tag` would say: the confirmed label wins (is given by --multi),
            # the rejected one does not
            wins = bool(logp[j] >= logp.max())
            correct.append((wins == (sign > 0), (wins or bool(logp[j] >= bar)) == (sign > 0)))
        per_mark[strength], candidates[strength] = np.array(judged), vectors
        right[strength] = np.array(correct, bool)
    chosen = one_standard_error(per_mark)
    scores = {r: float(v.mean()) for r, v in per_mark.items()}
    p_value = 1.0
    if chosen > 0:
        # an intersection-union test (Berger, 1982): significant only when both the
        # single-label and the --multi marks are, at the same level
        p_value = max(mcnemar_exact(right[chosen][:, mode], right[0.0][:, mode]) for mode in (0, 1))
        if p_value > SIGNIFICANCE:
            chosen = 0.0  # not a significant gain over zero-shot: keep zero-shot exactly
    vectors = text_vectors if chosen == 0 else candidates[chosen]
    return Refinement(vectors.astype(np.float32), chosen, k0, scores, p_value)


def mcnemar_exact(refined: np.ndarray, zero_shot: np.ndarray) -> float:
    """McNemar's exact test (1947), one-sided: the probability, were the two classifiers
    equally good, of at least as many of the discordant marks going the refined one's way
    (right where zero-shot is wrong, out of all marks where exactly one of them is right);
    a binomial tail with p = 1/2. 1.0 when no mark is discordant."""
    refined, zero_shot = np.asarray(refined, bool), np.asarray(zero_shot, bool)
    wins = int((refined & ~zero_shot).sum())
    discordant = wins + int((~refined & zero_shot).sum())
    if not discordant:
        return 1.0
    tail = sum(comb(discordant, i) for i in range(wins, discordant + 1))
    return float(tail / 2**discordant)


def one_standard_error(per_mark: dict[float, np.ndarray]) -> float:
    """The weakest strength whose leave-one-out score is within one standard error (of
    its paired difference) of the best one's: the one-standard-error rule of Breiman et
    al. (CART, 1984), so a strength is taken only when the marks clearly ask for it."""
    best = max(per_mark, key=lambda r: float(per_mark[r].mean()))
    for strength in sorted(per_mark):
        gap = per_mark[best] - per_mark[strength]
        error = float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else 0.0
        if float(gap.mean()) <= error:
            return strength
    return best


# -- from the library --------------------------------------------------------------------

_POSITIVE = (tag_rule.CONFIRMED, tag_rule.MANUAL)
_NEGATIVE = (tag_rule.REJECTED,)
_CHUNK = 8192


def _library_chunks(library: Library, model_id: int) -> Iterator[np.ndarray]:
    """The stored vectors of the library's photos under ``model_id``, in chunks (the same
    photos ``clipdesk tag`` scores: indexed, without a read error)."""
    query = (
        select(db.Embedding.vector)
        .join(db.Photo, db.Photo.fingerprint == db.Embedding.fingerprint)
        .where(db.Embedding.model_id == model_id, db.Photo.error.is_(None))
        .execution_options(yield_per=_CHUNK)
    )
    with library.session() as s:
        for rows in s.execute(query).partitions(_CHUNK):
            blob = b"".join(row[0] for row in rows)
            yield np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)


def library_feedback(
    library: Library, model_id: int, names: Sequence[str]
) -> tuple[list[Feedback], dict[int, np.ndarray]]:
    """Per label, the stored vectors (under ``model_id``) of the photo contents the user
    confirmed or added by hand (positives) and rejected (negatives); imported tags are not
    the user's word on this library's photos and are left out. Content keyed, so a copy
    counts once and a renamed photo keeps counting."""
    query = (
        select(db.TagMark.name, db.TagMark.source, db.TagMark.fingerprint, db.Embedding.vector)
        .join(
            db.Embedding,
            (db.Embedding.fingerprint == db.TagMark.fingerprint)
            & (db.Embedding.model_id == model_id),
        )
        .where(
            db.TagMark.name.in_(list(names)),
            db.TagMark.source.in_(_POSITIVE + _NEGATIVE),
            select(db.Photo.id).where(db.Photo.fingerprint == db.TagMark.fingerprint).exists(),
        )
        .order_by(db.TagMark.name, db.TagMark.fingerprint)
    )
    keys: dict[str, int] = {}
    vectors: dict[int, np.ndarray] = {}
    found: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in names}
    with library.session() as s:
        for name, source, fingerprint, blob in s.execute(query):
            key = keys.setdefault(fingerprint, len(keys))
            vectors[key] = np.frombuffer(blob, dtype=np.float32)
            found[name][0 if source in _POSITIVE else 1].append(key)
    feedback = []
    for name in names:
        positive, negative = found[name]
        feedback.append(
            Feedback(
                tuple(positive),
                np.stack([vectors[k] for k in positive]) if positive else None,
                tuple(negative),
                np.stack([vectors[k] for k in negative]) if negative else None,
            )
        )
    return feedback, vectors


def refine_from_library(
    library: Library,
    model_id: int,
    names: Sequence[str],
    text_vectors: np.ndarray,
    background: np.ndarray,
    logit_scale: float,
) -> Refinement:
    """:func:`refine` with the user's marks and the library's stored vectors; the text
    vectors unchanged when there is no feedback for these labels."""
    feedback, vectors = library_feedback(library, model_id, names)
    if not any(fb.size for fb in feedback):
        return Refinement(np.asarray(text_vectors, np.float32), 0.0, 0.0, {})
    lib = accumulate_moments(_library_chunks(library, model_id))
    return refine(text_vectors, background, logit_scale, lib, feedback, vectors)
