"""Multi-label tagging (``clipdesk tag --multi``) with many labels, most of which fit no photo.

    .venv/bin/python bench/bench_multilabel.py [--split test|validation] [--libraries 40]
        [--explore]

The project's trained tiny CLIP (tests/fixtures/clothing-clip.*) embeds the photos of one
split once (the vectors of bench/bench_cutoff.py, cached in /tmp); the 100 labels are
embedded with the ensemble prompts (cached in /tmp too). Labels: the 10 clothing classes
plus 90 everyday nouns that fit none of the photos ("car", "mountain", "dog" ...).
Libraries are built by subsampling, as in bench_cutoff.py: per library a largest class size
(3, 10, 30 or 80 in turn), each class 1..that many photos at random, 0-4 classes left out.
Every library is tagged with all 100 labels at once.

A "weak" model is emulated as well: the photo vectors with Gaussian noise added (and
re-normalised) until single-label top-1 over the 100 labels falls to about 0.37, the
strength of the model the issue measured on.

Figures per rule: labels per photo; precision and recall, micro (over all tags) and macro
(per present label, averaged); the share of (photo, absent label) pairs tagged and the
share of absent labels given to at least one photo of a library.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench._common import print_machine
from bench.bench_cutoff import FIXTURES, SIZES, _cpu_info, _embed

ABSENT = (
    "car", "mountain", "dog", "cat", "bicycle", "tree", "house", "beach", "boat",
    "airplane", "train", "bus", "horse", "bird", "flower", "cake", "pizza", "laptop",
    "phone", "book", "chair", "table", "sofa", "bed", "lamp", "clock", "cup", "bottle",
    "guitar", "piano", "football", "bridge", "river", "lake", "forest", "city skyline",
    "street", "snow", "sunset", "cloud", "moon", "fish", "cow", "sheep", "elephant",
    "lion", "tiger", "bear", "rabbit", "apple", "banana", "orange", "bread", "coffee",
    "wine glass", "television", "keyboard", "computer mouse", "camera", "kite",
    "skateboard", "surfboard", "tennis racket", "candle", "door", "window", "fence",
    "traffic light", "fire hydrant", "bench", "tent", "castle", "church", "tractor",
    "truck", "motorcycle", "helicopter", "rocket", "butterfly", "spider", "snake",
    "turtle", "frog", "duck", "mushroom", "cactus", "waterfall", "garden", "kitchen",
    "bathroom",
)  # fmt: skip

# (label scores (N, L) as cosines, background scores (N,), logit scale) -> (N, L) bool
Rule = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def _labels(split: str) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray, float]:
    """Photo vectors, their classes, the 100 labels, their vectors, background, scale."""
    photos, classes, _queries, _null, _names = _embed(split)
    names = sorted(set(classes.tolist()))
    labels = names + list(ABSENT)
    weights = FIXTURES / "clothing-clip.safetensors"
    key = hashlib.sha256(weights.read_bytes())
    key.update("\n".join(labels).encode())
    cache = Path("/tmp") / f"clipdesk-bench-multilabel-{key.hexdigest()[:16]}.npz"
    if cache.is_file():
        data = np.load(cache)
        return photos, classes, labels, data["labels"], data["background"], float(data["scale"])
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec
    from clipdesk.tagging.zero_shot import (
        background_embedding,
        label_embeddings,
        prompt_templates,
    )

    spec = ModelSpec.parse(f"clothing-clip:{weights}", FIXTURES / "clothing-clip.json")
    encoder = ClipEncoder(spec, "cpu")
    vectors = label_embeddings(encoder, labels, prompt_templates("ensemble"))
    background = background_embedding(encoder)
    scale = encoder.logit_scale
    np.savez(cache, labels=vectors, background=background, scale=scale)
    return photos, classes, labels, vectors, background, scale


def _softmax(scores: np.ndarray, background: np.ndarray, scale: float) -> np.ndarray:
    logits = scale * np.concatenate([scores, background[:, None]], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return np.asarray(probs / probs.sum(axis=1, keepdims=True))


def _top1(scores: np.ndarray, background: np.ndarray, scale: float) -> np.ndarray:
    probs = _softmax(scores, background, scale)
    out = np.zeros(scores.shape, bool)
    best = probs.argmax(axis=1)
    rows = np.flatnonzero(best < scores.shape[1])
    out[rows, best[rows]] = True
    return out


def _otsu(scores: np.ndarray, background: np.ndarray, scale: float) -> np.ndarray:
    from clipdesk.tagging.zero_shot import otsu_threshold

    probs = 1.0 / (1.0 + np.exp(-scale * (scores - background[:, None])))
    floors = []
    for column in probs.T:
        split = otsu_threshold(column)
        floors.append(0.5 if split is None else max(0.5, split))
    return np.asarray(probs >= np.array(floors))


def _bar(exponent: float, with_top: bool) -> Rule:
    def rule(scores: np.ndarray, background: np.ndarray, scale: float) -> np.ndarray:
        probs = _softmax(scores, background, scale)[:, :-1]
        kept = np.asarray(probs >= (scores.shape[1] + 1) ** -exponent)
        return np.asarray(kept | _top1(scores, background, scale)) if with_top else kept

    return rule


def _clipdesk(scores: np.ndarray, background: np.ndarray, scale: float) -> np.ndarray:
    """The rule of ``tag --multi`` (clipdesk.tagging.zero_shot.Classifier.multi_label)."""
    from clipdesk.tagging.zero_shot import multi_label_mask

    return multi_label_mask(scores, background, scale)


def _weaken(photos: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return photos
    rng = np.random.default_rng(0)
    noisy = photos + sigma * rng.normal(size=photos.shape) / np.sqrt(photos.shape[1])
    return np.asarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True), np.float32)


def _libraries(
    photos: np.ndarray, truth: np.ndarray, count: int, blends: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(photo vectors, (N, 10) truth) per library; with ``blends`` > 0 that share of the
    photos is replaced by the normalised mean of two photos of different classes, which
    then carries both labels (a stand-in for photos showing two things)."""
    classes = int(truth.max()) + 1
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        largest = SIZES[seed % len(SIZES)]
        absent = set(rng.choice(classes, int(rng.integers(0, 5)), replace=False).tolist())
        rows: list[int] = []
        for number in range(classes):
            if number in absent:
                continue
            pool = np.flatnonzero(truth == number)
            size = int(rng.integers(1, min(largest, len(pool)) + 1))
            rows.extend(rng.choice(pool, size, replace=False).tolist())
        chosen = np.array(rows)
        vectors = photos[chosen].copy()
        target = np.zeros((len(chosen), classes), bool)
        target[np.arange(len(chosen)), truth[chosen]] = True
        for i in np.flatnonzero(rng.random(len(chosen)) < blends):
            other = int(rng.choice(chosen))
            if truth[other] == truth[chosen[i]]:
                continue
            mixed = vectors[i] + photos[other]
            vectors[i] = mixed / np.linalg.norm(mixed)
            target[i, truth[other]] = True
        out.append((vectors, target))
    return out


def _measure(
    libraries: list[tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    background: np.ndarray,
    scale: float,
    rule: Rule,
) -> dict[str, float]:
    tags = photos = correct = relevant = 0
    absent_tags = absent_pairs = 0
    absent_used: list[float] = []
    macro_p: list[float] = []
    macro_r: list[float] = []
    for vectors, target in libraries:
        kept = rule(vectors @ labels.T, vectors @ background, scale)
        present = kept[:, : target.shape[1]]
        photos += len(vectors)
        tags += int(kept.sum())
        correct += int((present & target).sum())
        relevant += int(target.sum())
        absent = kept[:, target.shape[1] :]
        absent_tags += int(absent.sum())
        absent_pairs += absent.size
        absent_used.append(float(absent.any(axis=0).mean()))
        for j in np.flatnonzero(target.any(axis=0)):
            hits = int((present[:, j] & target[:, j]).sum())
            given = int(present[:, j].sum())
            macro_p.append(hits / given if given else 0.0)
            macro_r.append(hits / int(target[:, j].sum()))
    p = correct / tags if tags else 0.0
    r = correct / relevant
    return {
        "labels/photo": tags / photos,
        "P": p,
        "R": r,
        "F1": 2 * p * r / (p + r) if p + r else 0.0,
        "macro P": float(np.mean(macro_p)),
        "macro R": float(np.mean(macro_r)),
        "absent tags": absent_tags / absent_pairs,
        "absent used": float(np.mean(absent_used)),
    }


HEADER = (
    "| model | rule | labels/photo | precision | recall | F1 | macro P | macro R "
    "| absent labels: tagged pairs | absent labels used in a library |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(model: str, name: str, f: dict[str, float]) -> str:
    return (
        f"| {model} | {name} | {f['labels/photo']:.2f} | {f['P']:.3f} | {f['R']:.3f} "
        f"| {f['F1']:.3f} | {f['macro P']:.3f} | {f['macro R']:.3f} "
        f"| {f['absent tags'] * 100:.2f}% | {f['absent used'] * 100:.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--split", default="test", help="test (committed) or validation")
    parser.add_argument("--libraries", type=int, default=40)
    parser.add_argument("--weak-sigma", type=float, default=3.0, help="noise of the weak model")
    parser.add_argument("--choose", action="store_true", help="the candidate rules")
    args = parser.parse_args()
    print_machine("multi-label tagging with 100 labels", torch_threads=False)
    print(f"cpu info  : {_cpu_info()}")
    photos, classes, labels, label_vectors, background, scale = _labels(args.split)
    names = sorted(set(classes.tolist()))
    truth = np.array([names.index(c) for c in classes])
    print(
        f"split     : {args.split}, {len(photos)} photos, {len(names)} classes; "
        f"{len(labels)} labels ({len(names)} classes + {len(ABSENT)} that fit no photo); "
        f"{args.libraries} libraries; logit scale {scale:.2f}"
    )
    rules: dict[str, Rule] = {
        "old: Otsu per label": _otsu,
        "single-label top-1": _top1,
        "new: clipdesk tag --multi": _clipdesk,
    }
    if args.choose:
        for exponent in (1 / 3, 1 / 2, 2 / 3):
            for with_top in (False, True):
                name = f"p >= (L+1)^-{exponent:.2f}" + (" or top-1" if with_top else "")
                rules[name] = _bar(exponent, with_top)
    print()
    print(HEADER)
    for sigma in (0.0, args.weak_sigma):
        vectors = _weaken(photos, sigma)
        top1 = float(((vectors @ label_vectors.T).argmax(axis=1) == truth).mean())
        for blends in (0.0, 0.25):
            model = f"{'trained' if sigma == 0 else 'weak'} (top-1 {top1:.2f})" + (
                f", {blends:.0%} two-class photos" if blends else ""
            )
            libraries = _libraries(vectors, truth, args.libraries, blends)
            for name, rule in rules.items():
                print(
                    _row(model, name, _measure(libraries, label_vectors, background, scale, rule))
                )
            print(flush=True)


if __name__ == "__main__":
    main()
