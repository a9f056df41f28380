"""The per-query relevance cutoff (clipdesk.search.cutoff) on labelled held-out photos,
against a fixed top-20 and the best single fixed score threshold chosen with hindsight.

    .venv/bin/python bench/bench_cutoff.py [--split test|validation] [--libraries 80]
        [--fdr 0.2] [--choose]

The project's trained tiny CLIP (tests/fixtures/clothing-clip.*) embeds the photos of one
split once (vectors cached in /tmp, keyed by the weights and the photo list). Libraries are
built by subsampling: per library a largest class size (3, 10, 30 or 80 in turn), each
class 1..that many photos at random, and 0-4 classes left out. Queries, on every library:
"a photo of a {class}" for the 10 classes (present or left out) and 6 out-of-domain ones
("a photo of a car" ...). Queries with no relevant photo are *absent* queries.

Figures: precision, recall and F1 of the returned set, macro over present queries; F1 over
all queries, where an absent query scores 1 if it returns nothing and 0 otherwise; mean
photos returned for absent queries and the share of them that return nothing. The cutoff
sees, per query, the top-200 scores, the library's scores (all of them, or with --sample S
a random sample of S) and the library's scores against the generic prompts of zero-shot
tagging (its "background" vector). The fixed threshold is the one (on a 0.005 grid) with the
best all-query F1 over the very queries it is judged on; a second row shows the one with the
best present-query F1. --choose prints the cutoff for each FDR level (the method choice
made on the validation split). Defaults: the committed test split (372 photos).
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

from bench._common import DATA, REPO, print_machine
from clipdesk.search.cutoff import DEFAULT_FDR, relevant_count

FIXTURES = REPO / "tests" / "fixtures"
OOD = ("car", "dog", "mountain", "cake", "laptop", "beach at sunset")
SIZES = (3, 10, 30, 80)
TOP_M = 200

Method = Callable[[np.ndarray, np.ndarray, np.random.Generator], int]


def _cpu_info() -> str:
    """Model name and family from /proc/cpuinfo (the flags are printed above)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        return "unknown"
    return (
        f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}, vendor {fields.get('vendor_id', '?')}"
    )


def _split_folder(split: str) -> Path:
    if split == "test":
        return FIXTURES / "clothing-test"
    return DATA / "clothing-small" / split


def _embed(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Photo vectors, their class names, query vectors, the generic-prompt vector, queries."""
    folder = _split_folder(split)
    paths = sorted(folder.rglob("*.jpg"))
    if not paths:
        raise SystemExit(f"no photos under {folder}")
    classes = sorted({p.parent.name for p in paths})
    queries = [f"a photo of a {c}" for c in classes] + [f"a photo of a {o}" for o in OOD]
    weights = FIXTURES / "clothing-clip.safetensors"
    key = hashlib.sha256(weights.read_bytes())
    key.update("\n".join(str(p.relative_to(folder)) for p in paths).encode())
    key.update("\n".join(queries).encode())
    cache = Path("/tmp") / f"clipdesk-bench-cutoff-{split}-{key.hexdigest()[:16]}.npz"
    if cache.is_file():
        data = np.load(cache)
        print(f"vectors   : cached in {cache}")
        return data["photos"], data["labels"], data["queries"], data["null"], queries

    from clipdesk.imaging import load_rgb
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec
    from clipdesk.tagging.zero_shot import background_embedding

    spec = ModelSpec.parse(f"clothing-clip:{weights}", FIXTURES / "clothing-clip.json")
    encoder = ClipEncoder(spec, "cpu")
    chunks = []
    for start in range(0, len(paths), 64):
        batch = [
            encoder.preprocess_image(load_rgb(str(p), encoder.decode_side))
            for p in paths[start : start + 64]
        ]
        chunks.append(encoder.encode_batch(np.stack(batch)))
    photos = np.concatenate(chunks).astype(np.float32)
    labels = np.array([p.parent.name for p in paths])
    query_vectors = encoder.encode_texts(queries).astype(np.float32)
    null = background_embedding(encoder)
    np.savez(cache, photos=photos, labels=labels, queries=query_vectors, null=null)
    print(f"vectors   : {len(paths)} photos embedded, cached in {cache}")
    return photos, labels, query_vectors, null, queries


def _libraries(labels: np.ndarray, count: int) -> list[np.ndarray]:
    classes = sorted(set(labels.tolist()))
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        largest = SIZES[seed % len(SIZES)]
        absent = set(rng.choice(len(classes), int(rng.integers(0, 5)), replace=False).tolist())
        rows: list[int] = []
        for number, name in enumerate(classes):
            if number in absent:
                continue
            pool = np.flatnonzero(labels == name)
            size = int(rng.integers(1, min(largest, len(pool)) + 1))
            rows.extend(rng.choice(pool, size, replace=False).tolist())
        out.append(np.array(rows))
    return out


def _cases(
    photos: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    null_vector: np.ndarray,
    names: list[str],
    libraries: int,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scores, null scores, relevant mask) per library and query."""
    out = []
    for rows in _libraries(labels, libraries):
        vectors, classes = photos[rows], labels[rows]
        null = vectors @ null_vector
        for number, name in enumerate(names):
            target = name.removeprefix("a photo of a ")
            out.append((vectors @ queries[number], null, classes == target))
    return out


def _measure(
    cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], method: Method
) -> dict[str, float]:
    rng = np.random.default_rng(0)
    precision, recall, f1, f1_all, absent_returned = [], [], [], [], []
    for scores, null, relevant in cases:
        order = np.argsort(-scores, kind="stable")
        count = method(scores[order], null, rng)
        hits = int(relevant[order[:count]].sum())
        if relevant.any():
            p = hits / count if count else 0.0
            r = hits / int(relevant.sum())
            f = 2 * p * r / (p + r) if p + r else 0.0
            precision.append(p)
            recall.append(r)
            f1.append(f)
            f1_all.append(f)
        else:
            absent_returned.append(count)
            f1_all.append(1.0 if count == 0 else 0.0)
    return {
        "P": float(np.mean(precision)),
        "R": float(np.mean(recall)),
        "F1": float(np.mean(f1)),
        "F1 all": float(np.mean(f1_all)),
        "absent returned": float(np.mean(absent_returned)),
        "absent none": float(np.mean(np.array(absent_returned) == 0)),
    }


def _cutoff(fdr: float, with_null: bool, sample: int | None) -> Method:
    def method(ranked: np.ndarray, null: np.ndarray, rng: np.random.Generator) -> int:
        library = ranked
        if sample is not None and sample < len(ranked):
            library = rng.choice(ranked, sample, replace=False)
        return relevant_count(
            ranked[:TOP_M],
            library,
            library_size=len(ranked),
            null_scores=null if with_null else None,
            fdr=fdr,
        )

    return method


def _fixed(threshold: float) -> Method:
    return lambda ranked, _null, _rng: int(np.sum(ranked > threshold))


def _row(name: str, figures: dict[str, float]) -> str:
    return (
        f"| {name} | {figures['P']:.3f} | {figures['R']:.3f} | {figures['F1']:.3f} "
        f"| {figures['F1 all']:.3f} | {figures['absent returned']:.2f} "
        f"| {figures['absent none'] * 100:.0f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", help="test (committed) or validation")
    parser.add_argument("--libraries", type=int, default=80)
    parser.add_argument("--fdr", type=float, default=DEFAULT_FDR)
    parser.add_argument("--sample", type=int, default=50, help="library sample for one row")
    parser.add_argument("--choose", action="store_true", help="the FDR grid (validation)")
    args = parser.parse_args()
    print_machine("per-query relevance cutoff", torch_threads=False)
    print(f"cpu info  : {_cpu_info()}")

    photos, labels, queries, null_vector, names = _embed(args.split)
    cases = _cases(photos, labels, queries, null_vector, names, args.libraries)
    sizes = [len(c[0]) for c in cases[:: len(names)]]
    present = sum(bool(c[2].any()) for c in cases)
    print(
        f"split     : {args.split}, {len(photos)} photos; {args.libraries} libraries of "
        f"{min(sizes)}-{max(sizes)} photos (median {int(np.median(sizes))}); "
        f"{len(cases)} queries, {present} present, {len(cases) - present} absent"
    )
    print()
    header = (
        "| method | precision | recall | F1 | F1, all queries | absent: photos returned "
        "| absent: none returned |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    if args.choose:
        print(header)
        for fdr in (0.05, 0.2, 0.5):
            print(_row(f"cutoff, FDR {fdr}", _measure(cases, _cutoff(fdr, True, None))))
        print()
    grid = np.arange(-1.0, 1.0, 0.005)
    fixed = [(t, _measure(cases, _fixed(float(t)))) for t in grid]
    best_all = max(fixed, key=lambda item: item[1]["F1 all"])
    best_present = max(fixed, key=lambda item: item[1]["F1"])
    print(header)
    print(_row(f"cutoff (FDR {args.fdr})", _measure(cases, _cutoff(args.fdr, True, None))))
    print(
        _row(
            f"cutoff, library sample of {args.sample}",
            _measure(cases, _cutoff(args.fdr, True, args.sample)),
        )
    )
    print(_row("cutoff without null scores", _measure(cases, _cutoff(args.fdr, False, None))))
    print(_row("(a) fixed top-20", _measure(cases, lambda ranked, _n, _r: min(20, len(ranked)))))
    print(_row(f"(b) best fixed score {best_all[0]:.3f} (hindsight)", best_all[1]))
    print(
        _row(
            f"(b') best fixed score for present F1 {best_present[0]:.3f} (hindsight)",
            best_present[1],
        )
    )


if __name__ == "__main__":
    main()
