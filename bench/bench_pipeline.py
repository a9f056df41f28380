"""Indexing throughput of the whole pipeline against the raw model forward, on the CPU.

Same run, same machine, same encoder object (ViT-B-32 with random weights, batch 32):

* raw: ``encoder.encode_batch`` on a pre-made random 3x224x224 batch (no decoding);
* pipeline: a fresh library in a temp folder, ``add_folders`` + ``scan_folders``, then
  ``embed_pending`` with a live :class:`VectorIndex` (what ``Clipdesk.index`` runs):
  decode in the thread pool, preprocess, forward, commit to SQLite, add to HNSW;
* decode: ``load_rgb(path, 224)`` (JPEG draft mode) against ``load_rgb_full(path)``,
  one thread, mean ms per photo, plus the preprocess transform on the draft image.

Datasets: ../shared/data/large-photos (1.3-20 MP JPEGs) and a subset of
../shared/data/clothing-small/test (~400x530 JPEGs). Files are read through symlinks
from a temp folder, with a warm page cache (the decode pass runs first).

With ``--backend NAME`` (openvino-bf16, torch-bf16, ...) the raw forward and the pipeline
both use that image backend, as clipdesk does once it has chosen it on a machine. The
summary compares the pipeline with min(encoder, decode ceiling) and with the bound where
decoding and the model share the same cores.

    .venv/bin/python bench/bench_pipeline.py [--subset 300] [--raw-batches 6] [--quick]
        [--backend openvino-bf16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LoadMonitor,
    print_machine,
    require_data,
    usable_cores,
    wait_for_quiet,
    warm_page_cache,
)

TARGET_RATIO = 0.85


def list_jpegs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def spread_subset(paths: list[Path], n: int) -> list[Path]:
    """``n`` paths spread evenly over the sorted list (so every class folder is in it)."""
    if n >= len(paths):
        return paths
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def link_into(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, p in enumerate(paths):
        os.symlink(p, folder / f"{i:05d}_{p.parent.name}_{p.name}")


def numpy_preprocess(encoder):
    """The encoder's own transform with ToTensor + Normalize done in numpy (one thread).

    Bit-identical output. torch's ToTensor/Normalize start an OpenMP team per calling
    thread, so decode threads running them while the model runs oversubscribe the cores;
    this variant shows what the pipeline gains without that.
    """
    import numpy as np

    steps = list(encoder.preprocess.transforms)
    norm = steps[-1]
    names = [type(t).__name__ for t in steps[-2:]]
    if names != ["MaybeToTensor", "Normalize"]:
        raise SystemExit(f"unexpected open_clip transform {names}; update numpy_preprocess")
    pil_steps = steps[:-2]
    mean = np.asarray(norm.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(norm.std, np.float32).reshape(3, 1, 1)

    def preprocess(image):
        for step in pil_steps:
            image = step(image)
        a = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")
        return (a / np.float32(255) - mean) / std

    return preprocess


def raw_throughput(encoder, batch_size: int, batches: int) -> tuple[float, list[float]]:
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (batch_size, 3, encoder.image_size, encoder.image_size)
    batch = rng.standard_normal(shape, dtype=np.float32)
    encoder.encode_batch(batch)  # warm-up
    times = []
    for _ in range(batches):
        t = time.perf_counter()
        encoder.encode_batch(batch)
        times.append(time.perf_counter() - t)
    return batch_size * batches / sum(times), times


def decode_costs(encoder, paths: list[Path], verbose: bool = False) -> dict[str, float]:
    from PIL import Image

    from clipdesk.imaging import load_rgb, load_rgb_full

    size = encoder.decode_side
    np_prep = numpy_preprocess(encoder)
    draft = full = prep = prep_np = 0.0
    megapixels = 0.0
    progressive = 0
    rows = []
    for p in paths:
        t = time.perf_counter()
        img = load_rgb(str(p), size)
        d = time.perf_counter() - t
        t = time.perf_counter()
        encoder.preprocess_image(img)
        prep += time.perf_counter() - t
        t = time.perf_counter()
        np_prep(img)
        prep_np += time.perf_counter() - t
        t = time.perf_counter()
        big = load_rgb_full(str(p))
        f = time.perf_counter() - t
        draft += d
        full += f
        megapixels += big.size[0] * big.size[1] / 1e6
        with Image.open(p) as header:
            prog = bool(header.info.get("progressive") or header.info.get("progression"))
        progressive += prog
        rows.append((d, f, big.size, img.size, prog, p.name))
    if verbose:
        for d, f, full_size, draft_size, prog, name in sorted(rows, reverse=True):
            print(
                f"    {d * 1e3:7.1f} ms draft {draft_size[0]}x{draft_size[1]:<5d} "
                f"{f * 1e3:7.1f} ms full {full_size[0]}x{full_size[1]:<5d} "
                f"{'progressive' if prog else 'baseline   '} {name}"
            )
    n = len(paths)
    return {
        "draft_ms": 1e3 * draft / n,
        "full_ms": 1e3 * full / n,
        "prep_ms": 1e3 * prep / n,
        "prep_np_ms": 1e3 * prep_np / n,
        "mean_mp": megapixels / n,
        "progressive": progressive,
    }


def run_pipeline(
    encoder, paths: list[Path], batch_size: int, workers: int | None, with_index: bool
) -> dict[str, float]:
    from clipdesk.indexing.embedding import embed_pending
    from clipdesk.library import Library, db
    from clipdesk.library.scanning import ScanReport, add_folders, scan_folders
    from clipdesk.search.vector_index import VectorIndex

    with tempfile.TemporaryDirectory(prefix="clipdesk-bench-") as tmp:
        photos = Path(tmp) / "photos"
        link_into(paths, photos)
        library = Library(Path(tmp) / "library")
        try:
            add_folders(library, [photos])
            report = ScanReport()
            t = time.perf_counter()
            for _ in scan_folders(library, report=report):
                pass
            scan_s = time.perf_counter() - t

            with library.session() as s:
                row = db.Model(
                    key=encoder.spec.key,
                    spec=encoder.spec.spec,
                    dim=encoder.dim,
                    config_json=None,
                    created_at=time.time(),
                )
                s.add(row)
                s.commit()
                model_id = row.id
            index = None
            if with_index:
                index = VectorIndex(library, encoder.spec.key, model_id, encoder.dim)
                index.ensure_current()

            events: list[tuple[float, int, int]] = []
            t0 = time.perf_counter()
            for progress in embed_pending(
                library, encoder, model_id, index, batch_size=batch_size, workers=workers
            ):
                if progress.phase == "embed":
                    events.append((time.perf_counter(), progress.done, progress.failed))
            t_end = time.perf_counter()
            save_s = 0.0
            if index is not None:
                t = time.perf_counter()
                index.save()
                save_s = time.perf_counter() - t
        finally:
            library.close()

    done = events[-1][1] if events else 0
    failed = events[-1][2] if events else 0
    total_s = t_end - t0
    result = {
        "photos": len(paths),
        "scan_s": scan_s,
        "embedded": done - failed,
        "failed": failed,
        "embed_s": total_s,
        "rate_total": done / total_s,
        "save_s": save_s,
        "batches": len(events),
        "rate_steady": float("nan"),
    }
    if len(events) >= 3:
        # From the first batch out to the last: excludes filling the decode queue.
        (ta, da, _), (tb, db_, _) = events[0], events[-1]
        result["rate_steady"] = (db_ - da) / (tb - ta)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subset", type=int, default=300, help="clothing-small/test photos to use (default 300)"
    )
    parser.add_argument(
        "--large", type=int, default=0, help="large photos to use (default 0 = all)"
    )
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--raw-batches",
        type=int,
        default=6,
        help="timed batches per raw-forward measurement (default 6)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="rounds of raw + pipeline runs; the best of each is reported, "
        "since a shared machine only ever makes a run slower (default 2)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode threads for embed_pending (default: its own choice)",
    )
    parser.add_argument(
        "--no-index", action="store_true", help="embed without a VectorIndex (index=None)"
    )
    parser.add_argument(
        "--datasets", default="large,clothing", help="comma list of: large, clothing (default both)"
    )
    parser.add_argument(
        "--variants",
        default="clipdesk,numpy-prep",
        help="pipeline variants: clipdesk (as shipped) and numpy-prep (the "
        "preprocess's ToTensor+Normalize done in numpy; default both)",
    )
    parser.add_argument("--verbose", action="store_true", help="per-photo decode times")
    parser.add_argument(
        "--backend",
        default="torch-fp32",
        help="image backend for raw forward and pipeline (default torch-fp32, the plain loop)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        metavar="S",
        help="before each measurement, wait up to S seconds for other "
        "processes to leave the CPU idle (default 120; 0 = never wait)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small run: 64 clothing photos, 12 large, 2 raw batches, 1 round",
    )
    args = parser.parse_args()
    if args.quick:
        args.subset, args.large, args.raw_batches, args.repeat = 64, 12, 2, 1
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"clipdesk", "numpy-prep"}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    data = require_data()
    if data is None:
        return 0
    print_machine("clipdesk pipeline vs raw model (CPU, ViT-B-32 random weights)")

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    t = time.perf_counter()
    encoder = ClipEncoder(ModelSpec.parse("ViT-B-32:random"), "cpu")
    if args.backend != encoder.image_backend.name:
        from clipdesk.backends.choice import BackendChoice

        encoder.image_backend = encoder._make_backend(args.backend)
        encoder.backend_choice = BackendChoice(args.backend, "set by --backend", [])
    print(f"model     : {encoder.description}")
    print(f"backend   : {encoder.image_backend.name} ({encoder.image_backend.description})")
    print(
        f"            loaded in {time.perf_counter() - t:.1f} s, {encoder.device_reason}, "
        f"input {encoder.image_size}px, dim {encoder.dim}"
    )
    workers = args.workers or max(2, os.cpu_count() or 2)
    print(
        f"pipeline  : batch {args.batch}, {workers} decode threads, "
        f"index={'none' if args.no_index else 'VectorIndex (HNSW)'}, variants "
        f"{', '.join(variants)}, {args.repeat} round(s), best of each reported\n"
    )

    datasets: list[tuple[str, list[Path]]] = []
    wanted = {d.strip() for d in args.datasets.split(",") if d.strip()}
    if "large" in wanted:
        folder = require_data("large-photos")
        if folder is not None:
            paths = list_jpegs(folder)
            datasets.append(("large-photos", paths[: args.large] if args.large else paths))
    if "clothing" in wanted:
        folder = require_data("clothing-small", "test")
        if folder is not None:
            datasets.append(
                (f"clothing-test[{args.subset}]", spread_subset(list_jpegs(folder), args.subset))
            )
    if not datasets:
        print("SKIPPED: no dataset selected or found")
        return 0

    print("-- decode and preprocess, one thread, mean ms per photo, warm page cache --")
    decode: dict[str, dict[str, float]] = {}
    for name, paths in datasets:
        warm_page_cache(paths)
        decode_costs(encoder, paths[: min(4, len(paths))])  # warm the codecs
        passes = []
        for i in range(max(1, args.repeat)):
            wait_for_quiet(args.wait_quiet)
            with LoadMonitor() as mon:
                passes.append(decode_costs(encoder, paths, args.verbose and i == 0))
        d = {key: min(p[key] for p in passes) for key in passes[0]}
        decode[name] = d
        print(
            f"{name:22s} n={len(paths)} ({d['progressive']} progressive JPEGs), mean "
            f"{d['mean_mp']:.2f} MP"
        )
        print(
            f"    draft load_rgb {d['draft_ms']:6.2f} ms | full load_rgb_full "
            f"{d['full_ms']:6.2f} ms | full/draft {d['full_ms'] / d['draft_ms']:4.1f}x | "
            f"preprocess: open_clip {d['prep_ms']:5.2f} ms, numpy {d['prep_np_ms']:5.2f} ms"
            f" | {mon.describe()}"
        )
    print()

    raws: list[tuple[float, float]] = []
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    np_prep = numpy_preprocess(encoder)

    def measure_raw(label: str) -> None:
        wait_for_quiet(args.wait_quiet)
        with LoadMonitor() as mon:
            rate, times = raw_throughput(encoder, args.batch, args.raw_batches)
        raws.append((rate, mon.foreign_cores))
        print(
            f"raw forward {label:27s}: {rate:7.2f} images/s (batch s: "
            f"{', '.join(f'{x:.2f}' for x in times)}) | {mon.describe()}",
            flush=True,
        )

    print(f"-- raw model forward (batch {args.batch}) and whole pipeline, interleaved --")
    for rnd in range(1, args.repeat + 1):
        measure_raw(f"[round {rnd}]")
        for name, paths in datasets:
            for variant in variants:
                if variant == "numpy-prep":
                    encoder.preprocess_image = np_prep  # shadows the method, this object only
                try:
                    wait_for_quiet(args.wait_quiet)
                    with LoadMonitor() as mon:
                        r = run_pipeline(
                            encoder, paths, args.batch, args.workers, not args.no_index
                        )
                finally:
                    encoder.__dict__.pop("preprocess_image", None)
                r["foreign"] = mon.foreign_cores
                runs.setdefault((name, variant), []).append(r)
                print(
                    f"pipeline {name + ' ' + variant:30s}: {r['rate_total']:7.2f} images/s "
                    f"({r['embedded']} embedded, {r['failed']} failed, {r['embed_s']:.2f} s,"
                    f" {r['batches']} batches, steady {r['rate_steady']:.2f}/s; scan "
                    f"{r['scan_s']:.2f} s, index save {r['save_s'] * 1e3:.0f} ms) | "
                    f"{mon.describe()}",
                    flush=True,
                )
    measure_raw("[last]")
    raw, raw_load = max(raws)
    print()

    print(
        f"-- summary: best raw {raw:.2f} images/s ({1e3 / raw:.1f} ms/image, other load "
        f"{raw_load:.2f} cores; all raw: {', '.join(f'{x:.1f}' for x, _ in raws)}); "
        f"target ratio >= {TARGET_RATIO} --"
    )
    print(
        f"{'dataset':22s} {'variant':11s} {'pipeline/s':>10s} {'raw/s':>7s} {'ratio':>6s} "
        f"{'steady':>6s} {'bound':>6s} {'ceiling':>7s} {'of min':>6s} {'of shared':>9s} "
        f"{'draft ms':>8s} {'full ms':>8s} {'prep ms':>7s} {'load':>5s}  verdict"
    )
    cores = usable_cores()
    for name, _ in datasets:
        d = decode[name]
        for variant in variants:
            best = max(runs[(name, variant)], key=lambda r: r["rate_total"])
            ratio = best["rate_total"] / raw
            steady = best["rate_steady"] / raw
            prep = d["prep_np_ms"] if variant == "numpy-prep" else d["prep_ms"]
            decode_core_s = (d["draft_ms"] + prep) / 1e3  # per photo, on one core
            ceiling = cores / decode_core_s  # decoding alone on every core
            # The model fills every core while it runs, so decoding only fits around it.
            shared = 1 / (1 / raw + decode_core_s / cores)
            of_min = best["rate_total"] / min(raw, ceiling)
            of_shared = best["rate_total"] / shared
            verdict = (
                f"ratio {'ok' if ratio >= TARGET_RATIO else 'BELOW'}, "
                f"of min {'ok' if of_min >= TARGET_RATIO else 'BELOW'}"
            )
            print(
                f"{name:22s} {variant:11s} {best['rate_total']:10.2f} {raw:7.2f} {ratio:6.2f} "
                f"{steady:6.2f} {shared / raw:6.2f} {ceiling:7.1f} {of_min:6.2f} "
                f"{of_shared:9.2f} {d['draft_ms']:8.2f} {d['full_ms']:8.2f} "
                f"{prep:7.2f} {best['foreign']:5.2f}  {verdict}"
            )
    print("\nratio   = best pipeline images/s over the whole embed phase / best raw images/s")
    print("steady  = the same, first to last batch out (nan: fewer than 3 batches)")
    print("load    = cores used by other processes during that best run (0 = quiet)")
    print(
        f"ceiling = decode + preprocess alone on all {cores} cores, photos/s; of min = pipeline "
        "/ min(raw, ceiling) (issue 6's measure)"
    )
    print(
        "bound   = shared / raw, where shared = 1 / (1/raw + decode core-s / cores): the best "
        "rate when decoding only runs on cores the model leaves free; of shared = pipeline / "
        "shared"
    )
    print(
        "variant = clipdesk: as shipped; numpy-prep: the same transform, ToTensor+Normalize in "
        "numpy (bit-identical tensors), to show the cost of torch ops in decode threads"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
