"""Finding near-duplicates in a large library: the neighbour pass through the HNSW graph
(no all-pairs), the derived threshold, the groups; time, memory, and the recall of planted
duplicate pairs.

The library is synthetic (bench_million.py's structured 512-d unit vectors, fake paths):
a share of the photos gets a planted near-duplicate (its vector moved by noise, cosine
about 0.95-0.995 to it) or an exact copy (same fingerprint). What is timed is what grows
with the library: the graph built once (as an index run leaves it), the neighbour pass,
the grouping at the derived threshold and a regroup at another. The keep suggestion's
facts (a header and a 256-pixel decode per grouped photo) grow with the groups, not the
library, and are not part of it.

    .venv/bin/python bench/bench_duplicates.py [--photos 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_machine
from bench.bench_million import DIM, _loadavg, _rss_mb, _vectors

PLANTED_SHARE = 0.01  # photos with a planted near-duplicate
COPY_SHARE = 0.002  # photos with an exact copy


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(library_dir: Path, photos: int) -> tuple[float, list[tuple[int, int]]]:
    """Write the library with plain SQL; returns seconds and the planted (id, id) pairs
    (photo ids are 1..n in insertion order)."""
    import numpy as np
    from sqlalchemy import text

    from clipdesk.library import Library
    from clipdesk.serving import MODEL_SETTING
    from clipdesk.spec import ModelSpec

    library = Library(library_dir)
    spec = ModelSpec.parse("ViT-B-32:random")
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((64, DIM)).astype(np.float32)
    with library.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO roots (path, added_at) VALUES (:p, :t)"),
            {"p": os.fsencode("/photos"), "t": time.time()},
        )
        conn.execute(
            text(
                "INSERT INTO models (key, spec, dim, config_json, created_at) "
                "VALUES (:k, :s, :d, NULL, :t)"
            ),
            {"k": spec.key, "s": spec.spec, "d": DIM, "t": time.time()},
        )
    planted: list[tuple[int, int]] = []
    step = 20_000
    next_id = 1
    written = 0
    while written < photos:
        count = min(step, photos - written)
        vectors = np.asarray(_vectors(rng, count, basis))
        fingerprints = [f"fp{written + i:012d}" for i in range(count)]
        # the last photos of each step duplicate earlier ones of the same step
        near = int(count * PLANTED_SHARE)
        copies = int(count * COPY_SHARE)
        sources = rng.choice(count - near - copies, near + copies, replace=False)
        for j, source in enumerate(sources[:near]):
            at = count - near - copies + j
            strength = rng.uniform(0.004, 0.014)  # cosine about 0.95-0.995 to its source
            moved = vectors[source] + strength * rng.standard_normal(DIM).astype(np.float32)
            vectors[at] = moved / np.linalg.norm(moved)
            planted.append((next_id + int(source), next_id + at))
        for j, source in enumerate(sources[near:]):
            at = count - copies + j
            vectors[at] = vectors[source]
            fingerprints[at] = fingerprints[source]
            planted.append((next_id + int(source), next_id + at))
        photo_rows = [
            {
                "path": os.fsencode(
                    f"/photos/{(written + i) // 1000:04d}/IMG_{written + i:07d}.jpg"
                ),
                "fp": fingerprints[i],
                "taken": 1_600_000_000.0 + (written + i) * 60.0,
            }
            for i in range(count)
        ]
        embedding_rows = {
            fingerprints[i]: vectors[i].tobytes() for i in range(count)
        }  # one vector per content
        with library.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO photos (root_id, path, size, mtime_ns, fingerprint, width, "
                    "height, taken_at, taken_from_exif, error) VALUES (1, :path, 3000000, "
                    "1600000000000000000, :fp, 4000, 3000, :taken, 1, NULL)"
                ),
                photo_rows,
            )
            conn.execute(
                text("INSERT INTO embeddings (fingerprint, model_id, vector) VALUES (:fp, 1, :v)"),
                [{"fp": fp, "v": v} for fp, v in embedding_rows.items()],
            )
        written += count
        next_id += count
    library.set_setting(MODEL_SETTING, spec.key)
    library.close()
    return time.perf_counter() - started, planted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--keep", metavar="DIR", help="build (or reuse) the library here")
    args = parser.parse_args()
    print_machine(f"Near-duplicates in {args.photos:,} photos", torch_threads=False)
    import numpy as np

    from clipdesk.duplicates.finding import neighbour_pass
    from clipdesk.duplicates.grouping import derived_threshold, near_groups
    from clipdesk.library import Library
    from clipdesk.progress import CancelToken
    from clipdesk.search.vector_index import load_vectors
    from clipdesk.services import Clipdesk

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="clipdesk-dup-"))
    library_dir = work / "library"
    pairs_file = work / "planted.npy"
    if not (library_dir / "library.sqlite3").is_file():
        seconds, planted = build(library_dir, args.photos)
        np.save(pairs_file, np.asarray(planted))
        print(f"synthetic library written in {seconds:.0f} s ({len(planted):,} planted pairs)")
    planted_pairs = np.load(pairs_file)

    print(f"load average {_loadavg()} (other jobs on the machine)")
    app = Clipdesk(Library(library_dir))
    index = app.vector_index()
    started = time.perf_counter()
    index.ensure_current()
    print(
        f"graph ready ({index.last_action}) in {time.perf_counter() - started:.0f} s; "
        f"RSS {_rss_mb():.0f} MB, peak {_peak_mb():.0f} MB"
    )

    rss0, peak0 = _rss_mb(), _peak_mb()
    started = time.perf_counter()
    cpu0 = time.process_time()
    pass_ = neighbour_pass(app.library, index, CancelToken())
    try:
        while True:
            next(pass_)
    except StopIteration as stop:
        lists = stop.value
    assert lists is not None
    pass_s = time.perf_counter() - started
    print(
        f"neighbour pass ({len(lists):,} contents, k={lists.neighbours.shape[1]}): "
        f"{pass_s:.1f} s ({len(lists) / pass_s:,.0f} photos/s, "
        f"CPU {time.process_time() - cpu0:.0f} s); "
        f"RSS +{_rss_mb() - rss0:.0f} MB, peak {_peak_mb():.0f} MB (was {peak0:.0f})"
    )

    vectors: dict[int, np.ndarray] = {}

    def vectors_of(ids: list[int]) -> np.ndarray:
        missing = [i for i in ids if i not in vectors]
        if missing:
            for found, rows in load_vectors(app.library, index.model_id, sorted(missing)):
                vectors.update(zip(found.tolist(), rows, strict=True))
        return np.stack([vectors[i] for i in ids])

    with app.library.session() as s:
        from sqlalchemy import text

        rows = s.execute(text("SELECT id, fingerprint FROM photos")).all()
    first: dict[str, int] = {}
    rep = {}
    for pid, digest in rows:
        rep[pid] = first.setdefault(digest, pid)

    def evaluate(threshold: float, label: str) -> None:
        started = time.perf_counter()
        groups = near_groups(lists, threshold, min, vectors_of)
        seconds = time.perf_counter() - started
        group_of = {}
        for number, group in enumerate(groups):
            for member in group:
                group_of[member] = number
        near = [(a, b) for a, b in planted_pairs.tolist() if rep[a] != rep[b]]
        exact = [(a, b) for a, b in planted_pairs.tolist() if rep[a] == rep[b]]
        found = sum(
            1
            for a, b in near
            if rep[a] in group_of and group_of.get(rep[a]) == group_of.get(rep[b])
        )
        planted_ids = {rep[x] for pair in planted_pairs.tolist() for x in pair}
        wrong = sum(1 for g in groups if sum(1 for m in g if m not in planted_ids) > 1)
        print(
            f"groups at {threshold:.4f} ({label}): {seconds:.2f} s; {len(groups):,} groups; "
            f"recall of planted near-duplicate pairs {found / max(len(near), 1):.4f} "
            f"({found:,}/{len(near):,}); exact copies {len(exact):,} (by fingerprint, all "
            f"found); groups joining 2+ unplanted photos: {wrong}"
        )

    started = time.perf_counter()
    threshold = derived_threshold(lists)
    print(
        f"threshold derived in {time.perf_counter() - started:.2f} s: {threshold.value} "
        f"({threshold.how})"
    )
    evaluate(threshold.value, "derived")
    evaluate(0.97, "a regroup, no new neighbour query")
    sims = lists.similarities[:, 0]
    print(
        "nearest-neighbour cosine percentiles (1, 50, 99): "
        + ", ".join(f"{v:.3f}" for v in np.percentile(sims, [1, 50, 99]))
    )
    print(f"peak RSS of the whole run: {_peak_mb():.0f} MB; load average {_loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
