"""What hnswlib built for a baseline CPU costs in search latency, against a native build.

The CPU bundle cannot ship hnswlib compiled with -march=native (issue 17: it crashed on every
CPU without AVX-512). This builds hnswlib 0.8.0 from source three ways with
packaging/build.py's own builder (``x86-64-v2``: SSE4.2, the bundle's floor; ``x86-64-v3``:
AVX2 and FMA; ``native``: this machine's -march=native, what pip builds by default), then
for each size N:

* N low-rank unit vectors of dimension 512 (bench_hnsw.py's ``lowrank``: a 32-d subspace
  plus noise and a shared mean, closer to photo embeddings than uniform ones),
* one index with clipdesk.search.vector_index's M / EF_CONSTRUCTION, built once by the native
  module and saved (the file format does not depend on the build),
* in a child process per build (each imports only its own module): load, ef = EF_SEARCH,
  one ``knn_query`` (k=10, one thread, as clipdesk searches) per query, p50 / p95 / mean.
  The builds take turns over ``--rounds`` rounds so that other load on the machine hits
  them alike; each figure is the median of its rounds. Every build must return the same
  neighbours (the same graph walked with the same arithmetic up to rounding).

    .venv/bin/python bench/bench_hnswlib_portable.py [--sizes 100000,1000000] [--queries 500]
        [--reuse] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, LoadMonitor, cpu_model, print_machine, wait_for_quiet
from bench_hnsw import lowrank_rows, perturbed

LEVELS = ("x86-64-v2", "x86-64-v3", "native")
K = 10

# The child: time single queries through one build of hnswlib (on sys.path first).
_CHILD = r"""
import json, sys, time
import numpy as np
import hnswlib
index_path, queries_path, dim, ef, k = sys.argv[1:6]
queries = np.load(queries_path)
index = hnswlib.Index(space="ip", dim=int(dim))
index.load_index(index_path)
index.set_ef(int(ef))
index.set_num_threads(1)
for q in queries[:50]:
    index.knn_query(q.reshape(1, -1), k=int(k))
wall, cpu, labels = [], [], []
for q in queries:
    t, c = time.perf_counter(), time.thread_time()
    found, _ = index.knn_query(q.reshape(1, -1), k=int(k))
    cpu.append(time.thread_time() - c)
    wall.append(time.perf_counter() - t)
    labels.append(found[0].tolist())
print(json.dumps({
    "module": hnswlib.__file__,
    "ms": [x * 1e3 for x in wall],
    "cpu_ms": [x * 1e3 for x in cpu],
    "labels": labels,
}))
"""


def cpu_family() -> str:
    """ "family F model M" from /proc/cpuinfo (the model name alone can be as vague as
    "AMD EPYC")."""
    found = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("cpu family", "model") and key.strip() not in found:
                    found[key.strip()] = value.strip()
                if not line.strip():
                    break
    except OSError:
        return "?"
    return f"family {found.get('cpu family', '?')} model {found.get('model', '?')}"


def _builder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("clipdesk_build", REPO / "packaging" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_modules(levels: list[str], work: Path, reuse: bool) -> dict[str, Path]:
    """Each level's hnswlib module unpacked in its own folder (what goes on sys.path)."""
    build = _builder()
    folders = {}
    for level in levels:
        folder = work / level / "module"
        if not (reuse and any(folder.glob("hnswlib*.so"))):
            started = time.perf_counter()
            wheel = build.build_hnswlib(level, work / level / "wheel")
            build.extension_of(wheel, folder)
            print(f"built hnswlib for {level} in {time.perf_counter() - started:.0f} s")
        (module,) = folder.glob("hnswlib*.so")
        use = build.simd_use(module)
        print(f"  {level:10s}: {use['avx512']} AVX-512 and {use['avx']} AVX instructions")
        folders[level] = folder
    return folders


def _child(folder: Path, *args: object) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    result: dict[str, object] = json.loads(out)
    assert Path(str(result["module"])).parent == folder, result["module"]
    return result


def build_index(folder: Path, data_path: Path, index_path: Path, m: int, ef_c: int) -> float:
    code = (
        "import sys, time, numpy as np, hnswlib\n"
        "data = np.load(sys.argv[1], mmap_mode='r')\n"
        "index = hnswlib.Index(space='ip', dim=data.shape[1])\n"
        "index.init_index(max_elements=len(data), M=int(sys.argv[3]),"
        " ef_construction=int(sys.argv[4]))\n"
        "t = time.perf_counter()\n"
        "for s in range(0, len(data), 50_000):\n"
        "    index.add_items(np.ascontiguousarray(data[s:s + 50_000]), np.arange(s, min(s + 50_000,"
        " len(data))))\n"
        "index.save_index(sys.argv[2])\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(folder)}
    out = subprocess.run(
        [sys.executable, "-c", code, data_path, index_path, str(m), str(ef_c)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return float(out.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="default 100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500, help="queries per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument(
        "--work",
        default=str(REPO / "build" / "hnswlib-bench"),
        help="where the builds and index files go (default build/hnswlib-bench)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the builds of an earlier run in --work"
    )
    parser.add_argument("--wait-quiet", type=float, default=30, metavar="S")
    parser.add_argument("--quick", action="store_true", help="20000 vectors, 200 queries")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = "20000", 200
    levels = [x for x in args.levels.split(",") if x]
    if "native" not in levels:
        levels.append("native")
    from clipdesk.search import vector_index

    m, ef_c, ef_s = vector_index.M, vector_index.EF_CONSTRUCTION, vector_index.EF_SEARCH
    print_machine("hnswlib for a baseline CPU against a native build", torch_threads=False)
    print(f"cpu id    : {cpu_family()}")
    print(f"index     : space ip, dim {args.dim}, M {m}, ef_construction {ef_c}, ef {ef_s}, k {K}")
    work = Path(args.work)
    folders = build_modules(levels, work, args.reuse)
    rows = []
    for n in [int(x) for x in args.sizes.split(",") if x]:
        folder = work / f"index-{n}-{args.dim}-{m}-{ef_c}-{args.queries}"
        data_path, queries_path = folder / "data.npy", folder / "queries.npy"
        index_path = folder / "index.bin"
        if not (args.reuse and index_path.is_file()):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            rng = np.random.default_rng(n)
            data = lowrank_rows(rng, n, args.dim)
            np.save(queries_path, perturbed(rng, data, args.queries, 0.5))
            np.save(data_path, data)
            del data
            with LoadMonitor() as mon:
                seconds = build_index(folders["native"], data_path, index_path, m, ef_c)
            print(f"\nN={n:,}: built in {seconds:.1f} s by the native module; {mon.describe()}")
        else:
            print(f"\nN={n:,}: the index of an earlier run ({index_path})")
        data_path.unlink(missing_ok=True)
        per_level: dict[str, list[np.ndarray]] = {level: [] for level in levels}
        cpu_level: dict[str, list[np.ndarray]] = {level: [] for level in levels}
        labels: dict[str, object] = {}
        for _ in range(args.rounds):
            for level in levels:
                wait_for_quiet(args.wait_quiet)
                with LoadMonitor() as mon:
                    result = _child(folders[level], index_path, queries_path, args.dim, ef_s, K)
                per_level[level].append(np.asarray(result["ms"]))
                cpu_level[level].append(np.asarray(result["cpu_ms"]))
                labels.setdefault(level, result["labels"])
                print(
                    f"  {level:10s} round: p50 {np.median(result['ms']):.3f} ms, "
                    f"CPU {np.median(result['cpu_ms']):.3f} ms; {mon.describe()}"
                )
        same = all(labels[level] == labels["native"] for level in levels)
        for level in levels:
            p50 = float(np.median([np.percentile(x, 50) for x in per_level[level]]))
            p95 = float(np.median([np.percentile(x, 95) for x in per_level[level]]))
            cpu = float(np.median([np.percentile(x, 50) for x in cpu_level[level]]))
            rows.append((n, level, p50, p95, cpu))
        print(f"  same neighbours from every build: {same}")
    print(f"\n{cpu_model()} ({cpu_family()}); wall-clock p50/p95, the query thread's CPU p50")
    print("| N | build | p50 ms | p95 ms | CPU p50 ms | p50 / native | CPU / native |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    native = {n: (p50, cpu) for n, level, p50, _, cpu in rows if level == "native"}
    for n, level, p50, p95, cpu in rows:
        ratio, cpu_ratio = p50 / native[n][0], cpu / native[n][1]
        print(
            f"| {n:,} | {level} | {p50:.3f} | {p95:.3f} | {cpu:.3f} | {ratio:.2f}x "
            f"| {cpu_ratio:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
