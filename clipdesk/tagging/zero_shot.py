"""Zero-shot tagging: the user's own labels, matched against stored photo vectors.

Text side, as in the CLIP paper: every label is put into several prompt templates, each
prompt's embedding is normalised, the prompts are averaged and the mean re-normalised.
Photos are never embedded again: their stored vectors are used.

Deciding (no hand-set constants):

- A *neutral background* class is built the same way from prompts that name nothing
  ("a photo.", "an image." ...). A label must beat it to be given at all.
- Single-label mode: softmax over the labels and the background, with the model's own
  learned temperature (``logit_scale``); the best class wins, and if that is the
  background the photo gets no tag ("none"). The score is that softmax probability.
- Multi-label mode (``tag --multi``): the same softmax over the labels and the background.
  A photo gets its best class (unless that is the background, as in single-label mode)
  and, besides it, every label whose probability is at least ``(L+1)^-1/2`` for ``L``
  labels (:func:`multi_label_bar`): the geometric mean of a blind guess, ``1/(L+1)``, and
  certainty, 1. The labels compete for the photo, so a label that fits no photo rarely
  wins any, and at most ``sqrt(L+1)`` labels can clear the bar (10 of 100 labels), so a
  photo never gets dozens. The score of each tag is its softmax probability. The bar was
  chosen on the validation split of a held-out set (bench/bench_multilabel.py --choose)
  among ``(L+1)^-1/3``, ``^-1/2`` and ``^-2/3``, each with and without the best class, as
  the one with the highest recall that kept precision >= 0.3 and at most 2 labels per
  photo for a trained and a weakened model; it depends only on the number of labels and
  the model's own temperature, nothing is tuned per model.

  The earlier rule (each label against the background alone, thresholded by Otsu's split
  of that label's probabilities over the photos, :meth:`Classifier.thresholds`) is kept
  for comparison: with 100 labels it gave ~47 labels per photo at precision 0.02, since
  a label that fits 1 % of the photos has no second mode to split.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from sqlalchemy import delete, select

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.library import tags as tag_rule
from clipdesk.library.queries import under_folder
from clipdesk.library.tags import Tag
from clipdesk.models.encoder import Encoder
from clipdesk.progress import CancelToken, Progress, RateMeter

# Made for personal photo collections: the ImageNet templates speak of "itap of" and
# "a plastic {}", which fit web images more than someone's own pictures.
PERSONAL_TEMPLATES = (
    "a photo of {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of my {}.",
    "a picture of {}.",
    "a snapshot of {}.",
    "a close-up photo of {}.",
    "a photo showing {}.",
    "a phone photo of {}.",
    "{}",
)
# The 80 ImageNet prompt templates of the CLIP paper (as open_clip lists them), kept
# here so that tagging runs without open_clip (the CPU bundle).
CLIP_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)
SINGLE_TEMPLATE = ("a photo of a {}.",)
BACKGROUND_PROMPTS = (
    "a photo.",
    "a picture.",
    "an image.",
    "a photo of something.",
    "a snapshot.",
    "a phone photo.",
)
_CHUNK = 8192  # photos per scoring step and transaction


def prompt_templates(kind: str) -> tuple[str, ...]:
    """``ensemble`` (80 ImageNet templates of the CLIP paper + personal ones) or ``single``."""
    if kind == "single":
        return SINGLE_TEMPLATE
    if kind != "ensemble":
        raise ClipdeskError(f"unknown prompt set {kind!r}: use ensemble or single")
    imagenet = CLIP_IMAGENET_TEMPLATES
    return imagenet + tuple(t for t in PERSONAL_TEMPLATES if t not in imagenet)


def _mean_direction(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


def label_embeddings(
    encoder: Encoder, labels: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
    """One unit vector per label: normalised prompt embeddings, averaged, re-normalised."""
    rows = []
    for label in labels:
        prompts = [template.format(label) for template in templates]
        rows.append(_mean_direction(encoder.encode_texts(prompts)))
    return np.stack(rows).astype(np.float32)


def background_embedding(encoder: Encoder) -> np.ndarray:
    return _mean_direction(encoder.encode_texts(list(BACKGROUND_PROMPTS))).astype(np.float32)


def otsu_threshold(values: np.ndarray) -> float | None:
    """The split of ``values`` into two groups with the largest between-group variance."""
    ordered = np.sort(values.astype(np.float64))
    if len(ordered) < 2 or ordered[0] == ordered[-1]:
        return None
    n = len(ordered)
    cumsum = np.cumsum(ordered)
    left_n = np.arange(1, n)
    left_mean = cumsum[:-1] / left_n
    right_mean = (cumsum[-1] - cumsum[:-1]) / (n - left_n)
    between = left_n * (n - left_n) * (left_mean - right_mean) ** 2
    best = int(np.argmax(between))
    return float((ordered[best] + ordered[best + 1]) / 2)


def multi_label_bar(label_count: int) -> float:
    """The probability a label needs to be given besides the best one: ``(L+1)^-1/2``.

    Over ``L`` labels and the background, a blind guess has probability ``1/(L+1)`` and a
    sure one 1; the bar is their geometric mean, halfway in log-probability (a label that
    clears it has removed at least half the uncertainty of a blind guess, in bits). At most
    ``sqrt(L+1)`` labels can clear it: 3 of 10 labels, 10 of 100.
    """
    if label_count < 1:
        raise ValueError("label_count must be at least 1")
    return float((label_count + 1) ** -0.5)


def _softmax_with_background(
    scores: np.ndarray, background: np.ndarray, logit_scale: float
) -> np.ndarray:
    """(N, L+1): softmax over the labels' and the background's logits, background last."""
    logits = logit_scale * np.concatenate(
        [np.asarray(scores, np.float64), np.asarray(background, np.float64)[:, None]], axis=1
    )
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return np.asarray(probs / probs.sum(axis=1, keepdims=True), dtype=np.float64)


def multi_label_mask(scores: np.ndarray, background: np.ndarray, logit_scale: float) -> np.ndarray:
    """(N, L) booleans: the labels ``tag --multi`` gives each photo (module docstring).

    ``scores``: (N, L) cosines of the photos with the labels; ``background``: (N,) cosines
    with the background vector; ``logit_scale``: the model's temperature.
    """
    probs = _softmax_with_background(scores, background, logit_scale)
    labels = probs.shape[1] - 1
    kept = probs[:, :labels] >= multi_label_bar(labels)
    best = probs.argmax(axis=1)
    rows = np.flatnonzero(best < labels)
    kept[rows, best[rows]] = True
    return kept


@dataclass(frozen=True)
class Classifier:
    """Label vectors, the background vector and the model's temperature."""

    labels: tuple[str, ...]
    label_vectors: np.ndarray  # (L, D)
    background: np.ndarray  # (D,)
    logit_scale: float

    def logits(self, photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.logit_scale * (photos @ self.label_vectors.T),
            self.logit_scale * (photos @ self.background),
        )

    def single(
        self, photos: np.ndarray, excluded: np.ndarray | None = None
    ) -> list[list[tuple[int, float]]]:
        """The best class of each photo (none when it is the background). ``excluded``:
        (N, L) booleans, labels the user rejected for a photo: its next best class wins."""
        label_logits, bg_logits = self.logits(photos)
        logits = np.concatenate([label_logits, bg_logits[:, None]], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        ranked = probs.copy()
        if excluded is not None:
            ranked[:, : len(self.labels)][excluded] = -1.0
        best = ranked.argmax(axis=1)
        none = len(self.labels)
        return [
            [] if b == none else [(int(b), float(p[b]))] for b, p in zip(best, probs, strict=True)
        ]

    def label_probabilities(self, photos: np.ndarray) -> np.ndarray:
        """(N, L): each label against the background alone (two-way softmax)."""
        label_logits, bg_logits = self.logits(photos)
        margin = label_logits - bg_logits[:, None]
        return np.asarray(1.0 / (1.0 + np.exp(-margin)), dtype=np.float64)

    def multi_label(
        self, photos: np.ndarray, excluded: np.ndarray | None = None
    ) -> list[list[tuple[int, float]]]:
        """The labels ``tag --multi`` gives each photo, best first, with their softmax
        probability (:func:`multi_label_mask`); never one of ``excluded`` (as in
        :meth:`single`)."""
        label_logits, bg_logits = self.logits(photos)
        probs = _softmax_with_background(label_logits, bg_logits, 1.0)
        kept = multi_label_mask(label_logits, bg_logits, 1.0)
        if excluded is not None:
            kept &= ~excluded
        return [
            sorted(((int(j), float(p[j])) for j in np.flatnonzero(k)), key=lambda t: -t[1])
            for p, k in zip(probs, kept, strict=True)
        ]

    def thresholds(self, probabilities: np.ndarray) -> np.ndarray:
        """The earlier multi-label rule's per-label bars (Otsu; module docstring)."""
        floors = []
        for column in probabilities.T:
            split = otsu_threshold(column)
            floors.append(0.5 if split is None else max(0.5, split))
        return np.array(floors, dtype=np.float64)

    def multi(
        self, probabilities: np.ndarray, thresholds: np.ndarray
    ) -> list[list[tuple[int, float]]]:
        decided = []
        for row in probabilities:
            chosen = [(int(j), float(row[j])) for j in np.nonzero(row >= thresholds)[0]]
            decided.append(sorted(chosen, key=lambda item: -item[1]))
        return decided


# -- label sets -------------------------------------------------------------------------


def create_label_set(library: Library, name: str, labels: Sequence[str]) -> int:
    """Create or replace a label set; returns the number of labels."""
    cleaned = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not name.strip():
        raise ClipdeskError("a label set needs a name")
    if not cleaned:
        raise ClipdeskError("a label set needs at least one label")
    with library.session() as s:
        existing = s.scalar(select(db.LabelSet).where(db.LabelSet.name == name))
        if existing is not None:
            s.delete(existing)  # its labels and tags go with it
            s.flush()
        label_set = db.LabelSet(name=name, created_at=time.time())
        s.add(label_set)
        s.flush()
        s.add_all(
            db.Label(label_set_id=label_set.id, name=label, position=i)
            for i, label in enumerate(cleaned)
        )
        s.commit()
    return len(cleaned)


def label_sets(library: Library) -> dict[str, list[str]]:
    with library.session() as s:
        rows = s.execute(
            select(db.LabelSet.name, db.Label.name)
            .join(db.Label, db.Label.label_set_id == db.LabelSet.id)
            .order_by(db.LabelSet.name, db.Label.position)
        ).all()
    result: dict[str, list[str]] = {}
    for set_name, label in rows:
        result.setdefault(set_name, []).append(label)
    return result


def delete_label_set(library: Library, name: str) -> None:
    with library.session() as s:
        existing = s.scalar(select(db.LabelSet).where(db.LabelSet.name == name))
        if existing is None:
            raise ClipdeskError(f"no label set named {name!r}")
        s.delete(existing)
        s.commit()


def _labels_of(library: Library, name: str) -> list[db.Label]:
    with library.session() as s:
        labels = list(
            s.scalars(
                select(db.Label)
                .join(db.LabelSet, db.LabelSet.id == db.Label.label_set_id)
                .where(db.LabelSet.name == name)
                .order_by(db.Label.position)
            )
        )
    if not labels:
        known = ", ".join(label_sets(library)) or "none yet"
        raise ClipdeskError(
            f"no label set named {name!r} (known: {known}); create one with "
            "`clipdesk labels create NAME LABEL...`"
        )
    return labels


# -- tagging ----------------------------------------------------------------------------


def _indexed_photos(
    library: Library, model_id: int, folder: str | None, *columns: object
) -> list[tuple[object, ...]]:
    """Rows of ``columns`` for the photos with a vector under ``model_id``, by path."""
    query = (
        select(*columns)  # type: ignore[call-overload]
        .join(db.Embedding, db.Embedding.fingerprint == db.Photo.fingerprint)
        .where(db.Embedding.model_id == model_id, db.Photo.error.is_(None))
        .order_by(db.Photo.path)
    )
    if folder is not None:
        query = query.where(under_folder(folder))
    with library.session() as s:
        return [tuple(row) for row in s.execute(query).all()]


def _photo_vectors(
    library: Library, model_id: int, folder: str | None
) -> tuple[np.ndarray, np.ndarray]:
    rows = _indexed_photos(library, model_id, folder, db.Photo.id, db.Embedding.vector)
    ids = np.asarray([row[0] for row in rows], dtype=np.int64)
    if not rows:
        return ids, np.zeros((0, 0), np.float32)
    blob = b"".join(row[1] for row in rows)  # type: ignore[misc]
    return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)


def build_classifier(
    library: Library, encoder: Encoder, model_id: int, label_set: str, prompts: str = "ensemble"
) -> Classifier:
    """The classifier ``clipdesk tag`` and the review queue use for ``label_set``: its
    labels' text vectors (prompt ensemble), refined by the photos the user confirmed and
    rejected for each label (:mod:`clipdesk.tagging.refine`; a label without feedback
    keeps its text vector), the background, the model's temperature."""
    # local: only building a classifier needs the marks and the library moments
    from clipdesk.tagging.refine import refine_from_library

    names = [label.name for label in _labels_of(library, label_set)]
    background = background_embedding(encoder)
    refined = refine_from_library(
        library,
        model_id,
        names,
        label_embeddings(encoder, names, prompt_templates(prompts)),
        background,
        encoder.logit_scale,
    )
    return Classifier(tuple(names), refined.vectors, background, encoder.logit_scale)


def tag_photos(
    library: Library,
    encoder: Encoder,
    model_id: int,
    label_set: str,
    folder: str | None = None,
    multi: bool = False,
    prompts: str = "ensemble",
    cancel: CancelToken | None = None,
) -> Iterator[Progress]:
    """Tag every indexed photo (under ``folder``) with labels of ``label_set``.

    Earlier tags from the same label set and model on those photos are replaced; a label
    the user rejected for a photo (:mod:`clipdesk.library.tags`) is never given to it.
    """
    cancel = cancel or CancelToken()
    labels = _labels_of(library, label_set)
    ids, vectors = _photo_vectors(library, model_id, folder)
    meter = RateMeter(total=len(ids))
    if not len(ids):
        yield meter.report("tag", 0, message="no indexed photos to tag")
        return
    classifier = build_classifier(library, encoder, model_id, label_set, prompts)
    label_ids = [label.id for label in labels]
    rejected = tag_rule.rejected_photo_ids(library, list(classifier.labels))
    for start in range(0, len(ids), _CHUNK):
        chunk_ids = ids[start : start + _CHUNK]
        chunk = vectors[start : start + _CHUNK]
        excluded = np.stack(
            [np.isin(chunk_ids, list(rejected[name])) for name in classifier.labels], axis=1
        )
        decisions = (
            classifier.multi_label(chunk, excluded) if multi else classifier.single(chunk, excluded)
        )
        with library.session() as s:
            s.execute(
                delete(db.PhotoTag).where(
                    db.PhotoTag.photo_id.in_(chunk_ids.tolist()),
                    db.PhotoTag.label_id.in_(label_ids),
                    db.PhotoTag.model_id == model_id,
                )
            )
            s.add_all(
                db.PhotoTag(
                    photo_id=int(photo_id),
                    label_id=label_ids[j],
                    model_id=model_id,
                    score=score,
                )
                for photo_id, chosen in zip(chunk_ids, decisions, strict=True)
                for j, score in chosen
            )
            s.commit()
        yield meter.report("tag", min(start + _CHUNK, len(ids)), message="tagging photos")
        meter.resumed()
        if cancel.cancelled:
            return


@dataclass(frozen=True)
class PhotoTags:
    photo_id: int
    path: str
    tags: list[Tag]  # the user's first, then the model's, best first

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "tags": [tag.as_json() for tag in self.tags]}


def tags_of_photos(
    library: Library, model_id: int, label_set: str, folder: str | None = None
) -> list[PhotoTags]:
    """Every indexed photo (under ``folder``) with its tags among one label set's labels:
    the model's, less those the user rejected, and those the user confirmed or added."""
    names = [label.name for label in _labels_of(library, label_set)]
    rows = _indexed_photos(library, model_id, folder, db.Photo.id, db.Photo.path)
    photos = cast(list[tuple[int, str]], rows)
    tags = tag_rule.tags_by_photo(library, model_id, [pid for pid, _ in photos], names)
    return [PhotoTags(pid, path, tags.get(pid, [])) for pid, path in photos]


def tag_filter(library: Library, model_id: int, label: str) -> set[int]:
    """The photos tagged ``label`` (or a tag spelled so but for case or Unicode form), for
    a search or a listing that names it: a name no label set has and no photo was given is
    an error (a typo would otherwise find nothing)."""
    found = tag_rule.matching_tag_name(library, label)
    if found is None:
        names = tag_rule.known_tag_names(library)
        known = ", ".join(names) if names else "none yet; see `clipdesk labels --help`"
        raise ClipdeskError(f"no tag named {label!r} (tags: {known})")
    return tag_rule.photos_with_tag(library, model_id, found)


def tag_counts(library: Library, model_id: int) -> dict[str, int]:
    return tag_rule.tag_counts(library, model_id)
