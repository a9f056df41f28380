"""HNSW recall@10 and query latency with clipdesk's index parameters.

For each size N: N random unit vectors (float32, dimension 512), an hnswlib index with
``space="ip"`` and clipdesk.search.vector_index's M / EF_CONSTRUCTION / EF_SEARCH, then

* build time (add_items in chunks, hnswlib's default threads = all cores),
* recall@10 against exact numpy brute force, for two query sets: random unit vectors
  (the hardest case: uniform data has no structure) and perturbed dataset vectors
  (a vector plus noise, renormalised; closer to searching real photo embeddings),
* single-query latency p50/p95 (one knn_query per query, as clipdesk searches; the text
  encoder is not included), plus an ef sweep,
* save_index file size and time, load_index time.

Optionally (--clipdesk N) the same through clipdesk's own path: a library with N photos
and vectors in SQLite, VectorIndex rebuild from SQLite, load from disk, and
VectorIndex.search + the photo-row fetch per query.

    .venv/bin/python bench/bench_hnsw.py [--sizes 100000,1000000] [--queries 200] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadMonitor, print_machine, require_data, wait_for_quiet

K = 10


def unit_rows(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        part = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start : start + len(part)] = part
    return out


def perturbed(rng: np.random.Generator, data: np.ndarray, n: int, noise: float) -> np.ndarray:
    """Dataset rows plus Gaussian noise of norm ~``noise``, renormalised."""
    rows = data[rng.choice(len(data), size=n, replace=False)].copy()
    rows += rng.standard_normal(rows.shape, dtype=np.float32) * np.float32(
        noise / np.sqrt(data.shape[1])
    )
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Exact top-k ids by inner product, best first, in chunks of the data."""
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    best_sc = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, len(data), chunk):
        scores = queries @ data[start : start + chunk].T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        ids = np.concatenate([best_ids, part + start], axis=1)
        sc = np.concatenate([best_sc, np.take_along_axis(scores, part, axis=1)], axis=1)
        keep = np.argsort(-sc, axis=1)[:, :k]
        best_ids = np.take_along_axis(ids, keep, axis=1)
        best_sc = np.take_along_axis(sc, keep, axis=1)
    return best_ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def latencies(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.empty((len(queries), k), dtype=np.int64)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        lab, _ = index.knn_query(q.reshape(1, -1), k=k)
        times[i] = time.perf_counter() - t
        labels[i] = lab[0]
    return labels, times * 1e3


def fmt_lat(ms: np.ndarray) -> str:
    return (
        f"p50 {np.percentile(ms, 50):6.3f} ms, p95 {np.percentile(ms, 95):6.3f} ms, "
        f"mean {ms.mean():6.3f} ms"
    )


def lowrank_rows(
    rng: np.random.Generator,
    n: int,
    dim: int,
    rank: int = 32,
    noise: float = 0.3,
    chunk: int = 100_000,
) -> np.ndarray:
    """Unit vectors near a random ``rank``-dimensional subspace, plus a shared mean
    direction: a synthetic stand-in for embeddings, which have low intrinsic dimension
    and are not centred. Seeded by ``rng`` (same subspace for data and queries)."""
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].astype(np.float32).T
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        part = rng.standard_normal((m, rank), dtype=np.float32) @ basis / np.float32(np.sqrt(rank))
        part += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
        part += np.float32(0.6) * mean
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start : start + m] = part
    return out


def bench_size(n: int, kind: str, args, params) -> dict[str, float]:
    import hnswlib

    m, ef_c, ef_s = params
    print(
        f"\n===== N = {n:,} x {args.dim} float32, {kind} "
        f"({n * args.dim * 4 / 2**30:.2f} GiB of vectors) =====",
        flush=True,
    )
    rng = np.random.default_rng(n)
    t = time.perf_counter()
    if kind == "random":
        data = unit_rows(rng, n, args.dim)
        q_random = unit_rows(rng, args.queries, args.dim)
    else:
        both = lowrank_rows(rng, n + args.queries, args.dim)
        data, q_random = both[:n], both[n:].copy()
        del both
    q_near = perturbed(rng, data, args.queries, args.noise)
    print(f"{kind} data made in {time.perf_counter() - t:.1f} s", flush=True)

    t = time.perf_counter()
    truth_random = exact_topk(data, q_random, K)
    truth_near = exact_topk(data, q_near, K)
    exact_s = time.perf_counter() - t
    top1 = np.sum(q_near * data[truth_near[:, 0]], axis=1)
    tenth = np.sum(q_near * data[truth_near[:, K - 1]], axis=1)
    print(
        f"exact top-{K} (numpy, {2 * args.queries} queries) in {exact_s:.1f} s; perturbed "
        f"queries: cosine to 1st {top1.mean():.3f}, to 10th {tenth.mean():.3f}; fresh "
        f"queries: cosine to 1st "
        f"{np.sum(q_random * data[truth_random[:, 0]], axis=1).mean():.3f}, to 10th "
        f"{np.sum(q_random * data[truth_random[:, K - 1]], axis=1).mean():.3f}",
        flush=True,
    )

    index = hnswlib.Index(space="ip", dim=args.dim)
    index.init_index(max_elements=n, ef_construction=ef_c, M=m)
    index.set_num_threads(args.threads if args.threads > 0 else (os.cpu_count() or 1))
    chunk = max(10_000, n // 20)
    wait_for_quiet(args.wait_quiet)
    with LoadMonitor() as mon:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            index.add_items(data[start : start + chunk], np.arange(start, min(n, start + chunk)))
            done = min(n, start + chunk)
            el = time.perf_counter() - t0
            print(
                f"  build {done:>9,}/{n:,}  {el:7.1f} s  ({done / el:7.0f} vectors/s, "
                f"eta {el / done * (n - done):6.0f} s)",
                flush=True,
            )
        build_s = time.perf_counter() - t0
    print(
        f"build: {build_s:.1f} s ({n / build_s:.0f} vectors/s) with "
        f"{index.num_threads} threads | {mon.describe()}",
        flush=True,
    )

    result: dict[str, float] = {"n": n, "kind": kind, "build_s": build_s, "exact_s": exact_s}
    index.set_num_threads(1)
    wait_for_quiet(args.wait_quiet)
    with LoadMonitor() as mon:
        for ef in sorted(set(args.ef) | {ef_s}):
            index.set_ef(ef)
            latencies(index, q_random[:20], K)  # warm
            lab_r, ms_r = latencies(index, q_random, K)
            lab_n, ms_n = latencies(index, q_near, K)
            r_r, r_n = recall(lab_r, truth_random), recall(lab_n, truth_near)
            mark = "  <- clipdesk EF_SEARCH" if ef == ef_s else ""
            print(
                f"  ef {ef:4d}: recall@{K} random {r_r:.3f}, perturbed {r_n:.3f} | random "
                f"{fmt_lat(ms_r)} | perturbed {fmt_lat(ms_n)}{mark}",
                flush=True,
            )
            if ef == ef_s:
                result.update(
                    recall_random=r_r,
                    recall_near=r_n,
                    p50_random=np.percentile(ms_r, 50),
                    p95_random=np.percentile(ms_r, 95),
                    p50_near=np.percentile(ms_n, 50),
                    p95_near=np.percentile(ms_n, 95),
                )
    print(f"  (queries one at a time, 1 thread | {mon.describe()})")

    index.set_ef(ef_s)
    index.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index.knn_query(q_random, k=K)
    print(
        f"batched knn_query of {len(q_random)} random queries, all threads: "
        f"{len(q_random) / (time.perf_counter() - t):.0f} queries/s"
    )

    with tempfile.TemporaryDirectory(prefix="clipdesk-hnsw-", dir=args.tmp) as tmp:
        path = os.path.join(tmp, "bench.hnsw")
        t = time.perf_counter()
        index.save_index(path)
        save_s = time.perf_counter() - t
        size = os.path.getsize(path)
        del index
        gc.collect()
        # Cold-ish load: the file is still in the page cache right after the save.
        loaded = hnswlib.Index(space="ip", dim=args.dim)
        t = time.perf_counter()
        loaded.load_index(path, max_elements=n)
        load_s = time.perf_counter() - t
        loaded.set_ef(ef_s)
        lab_n, _ = latencies(loaded, q_near, K)
        print(
            f"save_index {save_s:.2f} s, file {size / 2**20:.0f} MiB "
            f"({size / n:.0f} bytes/vector); load_index {load_s:.2f} s (page cache warm); "
            f"recall after load (perturbed) {recall(lab_n, truth_near):.3f}",
            flush=True,
        )
        del loaded
    result.update(save_s=save_s, file_mib=size / 2**20, load_s=load_s)
    del data
    gc.collect()
    return result


def bench_clipdesk(n: int, args) -> None:
    """clipdesk's own path: vectors in SQLite, VectorIndex rebuild/load/search."""
    from sqlalchemy import text

    from clipdesk.library import Library
    from clipdesk.search.results import photo_rows
    from clipdesk.search.vector_index import VectorIndex
    from clipdesk.services import Clipdesk

    print(f"\n===== clipdesk VectorIndex over a library of {n:,} photos =====", flush=True)
    rng = np.random.default_rng(7)
    data = unit_rows(rng, n, args.dim)
    queries = perturbed(rng, data, args.queries, args.noise)
    with tempfile.TemporaryDirectory(prefix="clipdesk-hnsw-lib-", dir=args.tmp) as tmp:
        library = Library(Path(tmp) / "library")
        try:
            t = time.perf_counter()
            with library.engine.begin() as conn:
                conn.execute(
                    text("INSERT INTO roots (id, path, added_at) VALUES (1, :p, 0)"),
                    {"p": os.fsencode(os.path.join(tmp, "photos"))},
                )
                conn.execute(
                    text(
                        "INSERT INTO models (id, key, spec, dim, created_at) VALUES "
                        "(1, 'bench:random', 'bench:random', :d, 0)"
                    ),
                    {"d": args.dim},
                )
                for start in range(0, n, 50_000):
                    ids = range(start, min(n, start + 50_000))
                    conn.execute(
                        text(
                            "INSERT INTO photos (root_id, path, size, mtime_ns, fingerprint, "
                            "width, height, taken_at, taken_from_exif, error) VALUES "
                            "(1, :p, 1, 0, :f, 640, 480, 0, 0, NULL)"
                        ),
                        [
                            {
                                "p": os.fsencode(os.path.join(tmp, "photos", f"{i:07d}.jpg")),
                                "f": f"{i:032x}",
                            }
                            for i in ids
                        ],
                    )
                    conn.execute(
                        text(
                            "INSERT INTO embeddings (fingerprint, model_id, vector) "
                            "VALUES (:f, 1, :v)"
                        ),
                        [{"f": f"{i:032x}", "v": data[i].tobytes()} for i in ids],
                    )
            print(
                f"library filled in {time.perf_counter() - t:.1f} s "
                f"({os.path.getsize(library.db_path) / 2**20:.0f} MiB)",
                flush=True,
            )

            from clipdesk.search.vector_index import load_vectors

            t = time.perf_counter()
            loaded_rows = sum(len(ids) for ids, _ in load_vectors(library, 1))
            print(
                f"load_vectors alone (SQLite -> numpy): {time.perf_counter() - t:.2f} s "
                f"for {loaded_rows:,} rows",
                flush=True,
            )
            index = VectorIndex(library, "bench:random", 1, args.dim)
            wait_for_quiet(args.wait_quiet)
            with LoadMonitor() as mon:
                t = time.perf_counter()
                index.ensure_current()
                rebuild_s = time.perf_counter() - t
            print(
                f"VectorIndex rebuild from SQLite (incl. save): {rebuild_s:.1f} s "
                f"[{index.last_action}] | {mon.describe()}",
                flush=True,
            )

            fresh = VectorIndex(library, "bench:random", 1, args.dim)
            t = time.perf_counter()
            fresh.ensure_current()
            load_s = time.perf_counter() - t
            print(f"VectorIndex load from disk: {load_s:.2f} s [{fresh.last_action}]")

            app = Clipdesk(library)
            fresh.search(queries[0], K)
            search_ms, rows_ms, raw_ms = [], [], []
            for q in queries:
                t = time.perf_counter()
                hits = fresh.search(q, K)
                t1 = time.perf_counter()
                photo_rows(app.library, [pid for pid, _ in hits])
                t2 = time.perf_counter()
                fresh._index.knn_query(q.reshape(1, -1), k=K)
                raw_ms.append((time.perf_counter() - t2) * 1e3)
                search_ms.append((t1 - t) * 1e3)
                rows_ms.append((t2 - t1) * 1e3)
            total = np.add(search_ms, rows_ms)
            print(f"raw knn_query                    : {fmt_lat(np.asarray(raw_ms))}")
            print(f"VectorIndex.search               : {fmt_lat(np.asarray(search_ms))}")
            print(f"photo rows of the hits (SQLite)  : {fmt_lat(np.asarray(rows_ms))}")
            print(f"search path total (no encoder)   : {fmt_lat(total)}")
        finally:
            library.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="100000,1000000",
        help="comma list of index sizes (default 100000,1000000)",
    )
    parser.add_argument("--dim", type=int, default=512, help="vector dimension (default 512)")
    parser.add_argument("--queries", type=int, default=200, help="queries per set (default 200)")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="norm of the noise added to perturbed queries (default 0.5)",
    )
    parser.add_argument(
        "--ef",
        default="32,64,256",
        help="extra ef values to sweep besides EF_SEARCH (default 32,64,256)",
    )
    parser.add_argument(
        "--data",
        default="random,lowrank",
        help="datasets: random (uniform unit vectors, the brief's worst case) "
        "and lowrank (32-d subspace + noise + shared mean, closer to "
        "real embeddings); default both",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="threads for add_items (default 0 = all cores)"
    )
    parser.add_argument(
        "--clipdesk",
        type=int,
        default=100_000,
        help="photos for the clipdesk VectorIndex path (0 = skip; default 100000)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        metavar="S",
        help="before each timed part, wait up to S seconds for other "
        "processes to leave the CPU idle (default 60; 0 = never wait)",
    )
    parser.add_argument("--tmp", default=None, help="folder for the index files")
    parser.add_argument(
        "--quick", action="store_true", help="20000 vectors, 100 queries, clipdesk path at 20000"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = "20000", 100
        args.clipdesk = min(args.clipdesk, 20_000)
    args.ef = [int(x) for x in args.ef.split(",") if x.strip()]
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    if require_data() is None:
        return 0
    print_machine("HNSW recall and latency with clipdesk's parameters", torch_threads=False)
    import hnswlib

    from clipdesk.search import vector_index

    params = (vector_index.M, vector_index.EF_CONSTRUCTION, vector_index.EF_SEARCH)
    try:
        from importlib.metadata import version

        hnsw_version = version("hnswlib")
    except Exception:  # informational only
        hnsw_version = getattr(hnswlib, "__version__", "?")
    print(
        f"hnswlib {hnsw_version}, space ip, dim {args.dim}, "
        f"M={params[0]}, EF_CONSTRUCTION={params[1]}, EF_SEARCH={params[2]} "
        f"(from clipdesk.search.vector_index); {args.queries} random + {args.queries} perturbed "
        f"queries (noise norm {args.noise})"
    )

    results = []
    t_all = time.perf_counter()
    kinds = [k.strip() for k in args.data.split(",") if k.strip()]
    if set(kinds) - {"random", "lowrank"}:
        parser.error("--data takes random and/or lowrank")
    for kind in kinds:
        for n in sizes:
            results.append(bench_size(n, kind, args, params))
    if args.clipdesk:
        bench_clipdesk(args.clipdesk, args)

    print(
        f"\n-- summary (recall@{K} and latency at EF_SEARCH={params[2]}, "
        f"total {time.perf_counter() - t_all:.0f} s) --"
    )
    print(
        f"{'data':8s} {'N':>9s} {'build s':>8s} {'rec rand':>8s} {'rec pert':>8s} "
        f"{'p50 rand':>9s} {'p95 rand':>9s} {'p50 pert':>9s} {'p95 pert':>9s} "
        f"{'file MiB':>8s} {'save s':>7s} {'load s':>7s}"
    )
    for r in results:
        print(
            f"{r['kind']:8s} {r['n']:9,d} {r['build_s']:8.1f} {r['recall_random']:8.3f} "
            f"{r['recall_near']:8.3f} {r['p50_random']:9.3f} {r['p95_random']:9.3f} "
            f"{r['p50_near']:9.3f} {r['p95_near']:9.3f} {r['file_mib']:8.0f} "
            f"{r['save_s']:7.2f} {r['load_s']:7.2f}"
        )
    print(
        "(rand = fresh queries from the same distribution: uniform for random, new points "
        "for lowrank; pert = dataset rows plus noise; latencies in ms, one query per "
        "knn_query call, one thread)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
