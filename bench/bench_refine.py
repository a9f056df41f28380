"""Few-shot refinement of the labels (clipdesk.tagging.refine) against zero-shot.

    .venv/bin/python bench/bench_refine.py [--split test|validation] [--seeds 10]

The project's trained tiny CLIP (tests/fixtures/clothing-clip.*) and its held-out photos
(the vectors and label vectors of bench/bench_multilabel.py, cached in /tmp). Per seed, each
class's photos are split at random into a feedback pool (half) and a held-out test half.
The user is simulated: per label, ``k`` = 1, 5 or 10 photos of the pool are confirmed (at
most the pool's size), and up to ``k`` pool photos that zero-shot gave that label wrongly
(single-label over the 10 classes) are rejected. The library is every photo (pool + test).

Figures on the test half only: single-label top-1 over the 10 classes (the background may
win, as in ``clipdesk tag``), and ``tag --multi`` with 100 labels (the 10 classes + 90 that
fit no photo, as bench_multilabel.py; only the 10 get feedback): labels per photo, micro
precision and recall, the share of (photo, absent label) pairs tagged. Mean over the seeds,
and (in brackets) the worst seed's difference to zero-shot; the strengths chosen (0 where
zero-shot is kept, among them where the leave-one-out gain is not significant). "Photos
alone": top-1 of the class centroids of the whole pool (centred on the library mean), how
well the image features separate the classes without any text.

Three models: the trained one; a weak one (bench_multilabel's Gaussian noise on the photo
vectors), where the photos separate the classes no better than the text; and the trained
one with vague label names (noise on the classes' text vectors across the library's mean
direction, their level against the background kept), where the photos separate the
classes better than the names do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench._common import print_machine
from bench.bench_cutoff import _cpu_info
from bench.bench_multilabel import _labels, _weaken
from clipdesk.tagging.refine import Feedback, moments, refine
from clipdesk.tagging.zero_shot import multi_label_mask

SHOTS = (1, 5, 10)


def _single(
    vectors: np.ndarray, labels: np.ndarray, background: np.ndarray, scale: float
) -> np.ndarray:
    """Classifier.single's choice: index of the best label, or -1 for the background."""
    logits = scale * np.concatenate([vectors @ labels.T, (vectors @ background)[:, None]], axis=1)
    best = logits.argmax(axis=1)
    return np.where(best == labels.shape[0], -1, best)


def _figures(
    test: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    background: np.ndarray,
    scale: float,
    classes: int,
) -> dict[str, float]:
    top1 = float((_single(test, labels[:classes], background, scale) == truth).mean())
    kept = multi_label_mask(test @ labels.T, test @ background, scale)
    target = np.zeros(kept.shape, bool)
    target[np.arange(len(test)), truth] = True
    hits = int((kept & target).sum())
    return {
        "top1": top1,
        "lpp": float(kept.sum() / len(test)),
        "P": hits / max(int(kept.sum()), 1),
        "R": hits / len(test),
        "absent": float(kept[:, classes:].mean()),
    }


def _vague(labels: np.ndarray, classes: int, sigma: float, mean: np.ndarray) -> np.ndarray:
    """The class labels' text vectors blurred: Gaussian noise across the library's mean
    photo direction, their component along it (their general level against the
    background) kept. Labels whose names tell the model little (a user's own words),
    while the photos still separate the classes."""
    if sigma == 0:
        return labels
    rng = np.random.default_rng(1)
    unit = mean / np.linalg.norm(mean)
    out = labels.copy()
    for j in range(classes):
        along = unit * float(unit @ labels[j])
        across = labels[j] - along
        noise = sigma * rng.normal(size=len(unit)) / np.sqrt(len(unit)) * np.linalg.norm(across)
        noise -= unit * float(unit @ noise)
        moved = across + noise
        out[j] = along + moved * np.linalg.norm(across) / np.linalg.norm(moved)
    return out


def _run(
    photos: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    background: np.ndarray,
    scale: float,
    classes: int,
    shots: int,
    seed: int,
    reject: bool,
) -> tuple[dict[str, float], dict[str, float], float, float]:
    rng = np.random.default_rng(seed)
    pool: list[int] = []
    held: list[int] = []
    for c in range(classes):
        rows = rng.permutation(np.flatnonzero(truth == c))
        half = len(rows) // 2
        pool += rows[:half].tolist()
        held += rows[half:].tolist()
    pool_a, held_a = np.array(pool), np.array(held)
    zero_pool = _single(photos[pool_a], labels[:classes], background, scale)
    feedback = []
    for c in range(classes):
        mine = pool_a[truth[pool_a] == c]
        confirmed = rng.choice(mine, min(shots, len(mine)), replace=False)
        wrong = pool_a[(zero_pool == c) & (truth[pool_a] != c)] if reject else pool_a[:0]
        rejected = rng.choice(wrong, min(shots, len(wrong)), replace=False)
        feedback.append(
            Feedback(
                tuple(int(i) for i in confirmed),
                photos[confirmed],
                tuple(int(i) for i in rejected),
                photos[rejected],
            )
        )
    feedback += [Feedback()] * (labels.shape[0] - classes)
    vectors = {int(i): photos[i] for i in pool_a}
    result = refine(labels, background, scale, moments(photos), feedback, vectors)
    test, target = photos[held_a], truth[held_a]
    before = _figures(test, target, labels, background, scale, classes)
    after = _figures(test, target, result.vectors, background, scale, classes)
    # how well the photos alone separate the classes: centroids of the whole pool
    centre = photos.mean(axis=0)
    centroids = np.stack([photos[pool_a[truth[pool_a] == c]].mean(axis=0) for c in range(classes)])
    alone = float((((test - centre) @ (centroids - centre).T).argmax(axis=1) == target).mean())
    return before, after, result.strength, alone


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--split", default="test", help="test (committed) or validation")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--weak-sigma", type=float, default=3.0, help="noise of the weak model")
    parser.add_argument(
        "--vague-sigma", type=float, default=4.0, help="noise on the class labels' text vectors"
    )
    args = parser.parse_args()
    print_machine("few-shot refinement of labels", torch_threads=False)
    print(f"cpu info  : {_cpu_info()}")
    photos, names_of, labels, all_label_vectors, background, scale = _labels(args.split)
    names = sorted(set(names_of.tolist()))
    truth = np.array([names.index(c) for c in names_of])
    classes = len(names)
    print(
        f"split     : {args.split}, {len(photos)} photos, {classes} classes (half of each "
        f"for feedback, half held out); {len(labels)} labels for --multi; {args.seeds} seeds"
    )
    print()
    print(
        "| model | feedback per label | top-1 zero-shot | top-1 refined (worst seed Δ) "
        "| --multi labels/photo | precision | recall | absent pairs tagged | strength r "
        "| photos alone |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    scenarios = (
        ("trained", 0.0, 0.0),
        ("weak (noisy photo vectors)", args.weak_sigma, 0.0),
        ("trained, vague label names", 0.0, args.vague_sigma),
    )
    for model, sigma, vague in scenarios:
        vectors = _weaken(photos, sigma)
        label_vectors = _vague(all_label_vectors, classes, vague, photos.mean(axis=0))
        for reject in (False, True):
            for shots in SHOTS:
                runs = [
                    _run(
                        vectors, truth, label_vectors, background, scale, classes, shots, s, reject
                    )
                    for s in range(args.seeds)
                ]
                b = {k: np.mean([r[0][k] for r in runs]) for k in runs[0][0]}
                a = {k: np.mean([r[1][k] for r in runs]) for k in runs[0][1]}
                worst = min(r[1]["top1"] - r[0]["top1"] for r in runs)
                worst_p = min(r[1]["P"] - r[0]["P"] for r in runs)
                worst_r = min(r[1]["R"] - r[0]["R"] for r in runs)
                strengths = sorted({r[2] for r in runs})
                alone = float(np.mean([r[3] for r in runs]))
                said = f"{shots} confirmed" + (f" + ≤{shots} rejected" if reject else "")
                print(
                    f"| {model} | {said} | {b['top1']:.3f} | {a['top1']:.3f} ({worst:+.3f}) "
                    f"| {b['lpp']:.2f} → {a['lpp']:.2f} "
                    f"| {b['P']:.3f} → {a['P']:.3f} ({worst_p:+.3f}) "
                    f"| {b['R']:.3f} → {a['R']:.3f} ({worst_r:+.3f}) "
                    f"| {b['absent'] * 100:.2f}% → {a['absent'] * 100:.2f}% "
                    f"| {', '.join(f'{s:g}' for s in strengths)} | {alone:.3f} |",
                    flush=True,
                )
    _timing()


def _timing() -> None:
    """The cost at a larger scale (synthetic vectors): 20,000 photos of 512 dimensions, 100
    labels, 60 of them with 10 confirmed and 5 rejected photos (900 marks, 600 judged)."""
    import time

    from clipdesk.tagging.refine import accumulate_moments

    rng = np.random.default_rng(0)
    dim, labels, count = 512, 100, 20_000
    common = rng.normal(size=dim)
    photos = 3 * common / np.linalg.norm(common) + rng.normal(size=(count, dim)) / np.sqrt(dim)
    photos = (photos / np.linalg.norm(photos, axis=1, keepdims=True)).astype(np.float32)
    text = rng.normal(size=(labels, dim))
    text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    lib = accumulate_moments(photos[i : i + 8192] for i in range(0, count, 8192))
    middle = time.perf_counter()
    feedback = [
        Feedback(
            tuple(range(15 * j, 15 * j + 10)),
            photos[15 * j : 15 * j + 10],
            tuple(range(15 * j + 10, 15 * j + 15)),
            photos[15 * j + 10 : 15 * j + 15],
        )
        for j in range(60)
    ] + [Feedback()] * (labels - 60)
    refine(text, text[0], 100.0, lib, feedback, {i: photos[i] for i in range(900)})
    end = time.perf_counter()
    print(
        f"\ncost      : library moments {middle - start:.2f} s for {count} photos x {dim}; "
        f"refinement {end - middle:.2f} s for {labels} labels, 900 marks"
    )


if __name__ == "__main__":
    main()
