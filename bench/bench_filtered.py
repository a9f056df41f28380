"""Filtered nearest-neighbour search at scale: recall@10 against the exact filtered top 10,
and single-query p50 / p95 latency, for filters that keep 0.1 %, 1 %, 10 % and 50 % of a
synthetic library (bench_million.py's low-rank 512-d unit vectors, written to SQLite; the
graph and the int8 copy built by clipdesk's own VectorIndex, with its M / ef_construction).

"shipped" is ``VectorIndex.search(..., allowed=...)``, the real code path (its policy:
``exact_filter`` / ``filtered_ef`` in clipdesk.search.vector_index). The alternatives time
one route each on the same graph and copy:

- ``exact: int8+sqlite``: the allowed rows' int8 codes scored, the best re-ranked with
  SQLite's vectors (the shipped exact route);
- ``exact: sqlite``: every allowed row's vector read from SQLite and scored;
- ``exact: get_items``: the route before (hnswlib ``get_items``, about 0.1 ms a row);
- ``graph ef=N`` / ``graph ef=c*k/s``: hnswlib's filtered search, the filter as its
  callback, at a fixed ef (512 was the route before for over 20,000 allowed photos) or
  one raised as the filter narrows (k/s: k over the share of photos the filter keeps).

Filters: ``random`` keeps a random share of the photos; ``cluster`` keeps the photos
furthest along a random direction (a folder of similar photos, mostly far from the query).
The library and its index are kept under --cache to rerun (a 1M graph takes 10-20 min on
two cores).

    .venv/bin/python bench/bench_filtered.py --photos 100000
    nohup .venv/bin/python bench/bench_filtered.py --photos 1000000 > /tmp/r/f1m.log &
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_machine
from bench.bench_million import DIM, _vectors
from bench.bench_million import build as build_library

K = 10
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
FILTERS_PER_CELL = 8  # distinct filters per (kind, selectivity); queries cycle over them


def _cpu_family() -> str:
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return (
        f"family {fields.get('cpu family')} model {fields.get('model')} ({fields.get('vendor_id')})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--cache", default="/tmp/clipdesk-filtered")
    parser.add_argument("--kinds", default="random,cluster")
    parser.add_argument("--selectivities", default=",".join(map(str, SELECTIVITIES)))
    parser.add_argument("--slow-queries", type=int, default=10, help="for the slow routes")
    args = parser.parse_args()
    print_machine(f"Filtered search, {args.photos:,} photos", torch_threads=False)
    print(f"cpu id    : {_cpu_family()}", flush=True)
    import numpy as np

    from clipdesk.library import Library
    from clipdesk.search import vector_index as vi
    from clipdesk.services import Clipdesk

    library_dir = Path(args.cache) / str(args.photos) / "library"
    if not (library_dir / "library.sqlite3").is_file():
        seconds = build_library(library_dir, args.photos)
        print(f"synthetic library written in {seconds:.0f} s", flush=True)
    app = Clipdesk(Library(library_dir))
    index = app.vector_index()
    started = time.perf_counter()
    with app.library.exclusive("indexing"):  # as the indexer: it writes the int8 copy too
        index.ensure_current()
        index.save()
    print(
        f"index {index.last_action} in {time.perf_counter() - started:.0f} s "
        f"(M {vi.M}, ef_construction {vi.EF_CONSTRUCTION}, {len(index):,} photos)",
        flush=True,
    )
    costs = index.route_costs
    switch = max(
        (
            n
            for n in np.geomspace(10, len(index), 200).astype(int)
            if vi.exact_filter(int(n), len(index), K, True, costs)
        ),
        default=0,
    )
    print(
        f"policy: the route estimated cheaper (first estimates: int8 score {costs.score_row:.1e}"
        f" s a row, SQLite {costs.read_row:.1e} s a row, graph {costs.graph_unit:.1e} s per "
        f"ef/sqrt(selectivity); exact up to about {switch:,} photos here), graph ef = "
        f"{vi.FILTER_EF_PER_HIT:g} x k / selectivity in [{vi.EF_SEARCH}, {vi.FILTER_EF_CAP}]"
    )

    parts = list(vi.load_vectors(app.library, index.model_id))
    ids = np.concatenate([p[0] for p in parts])
    vectors = np.concatenate([p[1] for p in parts])
    del parts
    basis = np.random.default_rng(0).standard_normal((64, DIM)).astype(np.float32)
    queries = np.asarray(_vectors(np.random.default_rng(1), args.queries, basis))
    rng = np.random.default_rng(7)
    graph = index._graph

    def graph_route(ef_of: Callable[[float], int]) -> Callable[[np.ndarray, set[int]], list[int]]:
        def run(query: np.ndarray, allowed: set[int]) -> list[int]:
            graph.set_ef(max(ef_of(len(allowed) / len(ids)), K))
            try:
                labels, _ = graph.knn_query(
                    query.reshape(1, -1), k=K, num_threads=1, filter=allowed.__contains__
                )
            except RuntimeError:
                return []
            return [int(x) for x in labels[0]]

        return run

    def sqlite_exact(query: np.ndarray, allowed: set[int]) -> list[int]:
        hits: list[tuple[float, int]] = []
        for found, rows in vi.load_vectors(app.library, index.model_id, sorted(allowed)):
            hits += zip((rows @ query).tolist(), found.tolist(), strict=True)
        return [pid for _, pid in sorted(hits, reverse=True)[:K]]

    def get_items_exact(query: np.ndarray, allowed: set[int]) -> list[int]:
        present = set(graph.get_ids_list())
        chosen = [i for i in allowed if i in present]
        rows = np.asarray(graph.get_items(chosen), dtype=np.float32)
        order = np.argsort(-(rows @ query))[:K]
        return [chosen[i] for i in order]

    routes: dict[str, tuple[Callable[[np.ndarray, set[int]], list[int]], int | None]] = {
        # name: (route, largest allowed set it is timed on; None: all)
        "shipped": (lambda q, a: [pid for pid, _ in index.search(q, K, None, a)], None),
        "exact: int8+sqlite": (
            lambda q, a: [pid for pid, _ in index._exact_among(q, K, None, a)],
            None,
        ),
        "exact: sqlite": (sqlite_exact, 100_000),
        "exact: get_items": (get_items_exact, 2_000),
        "graph ef=512": (graph_route(lambda s: 512), None),
        "graph ef=k/s": (graph_route(lambda s: int(max(512, min(8192, K / s)))), None),
        "graph ef=4k/s": (graph_route(lambda s: int(max(512, min(16384, 4 * K / s)))), None),
    }
    print()
    header = (
        f"{'N':>9} {'filter':>7} {'share':>6} {'allowed':>8}  {'route':<20} "
        f"{'recall@10':>9} {'p50 ms':>8} {'p95 ms':>8} {'queries':>7}"
    )
    print(header)
    print("-" * len(header), flush=True)
    for kind in args.kinds.split(","):
        for share in (float(x) for x in args.selectivities.split(",")):
            size = max(1, round(share * len(ids)))
            masks = []
            for _ in range(FILTERS_PER_CELL):
                if kind == "random":
                    keep = rng.choice(len(ids), size=size, replace=False)
                else:
                    direction = rng.standard_normal(DIM).astype(np.float32)
                    keep = np.argpartition(-(vectors @ direction), size - 1)[:size]
                masks.append(np.sort(keep))
            allowed_sets = [set(ids[m].tolist()) for m in masks]
            truth = []
            for q, query in enumerate(queries):
                rows = masks[q % FILTERS_PER_CELL]
                scores = vectors[rows] @ query
                truth.append(set(ids[rows[np.argsort(-scores)[:K]]].tolist()))
            for name, (route, largest) in routes.items():
                if largest is not None and size > largest:
                    continue
                slow = (
                    (name.startswith("exact") and size > 20_000)
                    or (name.startswith("graph") and share <= 0.01)
                    or name == "exact: get_items"
                )
                count = min(args.slow_queries, len(queries)) if slow else len(queries)
                times, recalls = [], []
                for q in range(count):
                    allowed = allowed_sets[q % FILTERS_PER_CELL]
                    t0 = time.perf_counter()
                    got = route(queries[q], allowed)
                    times.append(time.perf_counter() - t0)
                    recalls.append(len(truth[q] & set(got)) / K)
                p50, p95 = np.percentile(np.asarray(times) * 1000, [50, 95])
                print(
                    f"{len(ids):>9,} {kind:>7} {share * 100:>5g}% {size:>8,}  {name:<20} "
                    f"{np.mean(recalls):>9.3f} {p50:>8.1f} {p95:>8.1f} {count:>7}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
