"""The catalog's models measured on this CPU: how fast each indexes and answers a query.

For each catalog model, in a child process of its own (a clean memory figure, and a time
box): its architecture built by open_clip with pretrained=None (seeded random weights, the
same compute as the real weights; nothing is downloaded), then

- images/s of the image tower through clipdesk's torch backend (TorchBackend, fp32, the
  class-token tower where it applies), on photo-like probe inputs at the model's own image
  size, batch --batch, timed for --seconds after a warm-up; with --openvino also the same
  tower exported to ONNX and compiled by OpenVINO (fp32), as clipdesk's openvino-fp32
  backend runs it (its export time is not counted);
- ms per text query: one short query through the text tower as clipdesk runs it (the short
  tower where it applies, open_clip's encode_text otherwise), median of --queries runs;
  SigLIP 2's Gemma tokenizer needs transformers, so its query is random token ids of its
  full context (the same compute: SigLIP pads every query to its context length);
- the download size: the parameter count x 4 bytes (the fp32 checkpoints open_clip
  publishes), and the catalog's figure beside it;
- memory: how much the process's resident memory grew to build the model and encode.

Prints a markdown table with the CPU. ``--write`` stores the figures in
clipdesk/models/data/catalog_speeds.json, which `clipdesk models list` (SPEED) and the
default rule (clipdesk.models.catalog.choose_default) read. Short by default (2 cores
shared with other jobs): small batches, a few seconds per model, and the best of --rounds.

    .venv/bin/python bench/bench_catalog.py [--only vit-b-32,pe-core-t-16] [--openvino] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._common import REPO, cpu_flags, cpu_model, print_machine, usable_cores
from clipdesk.models.catalog import REFERENCE_NAME

QUERY = "a red summer dress on a beach"


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _text_tokens(model: Any, vocab_size: int) -> Any:
    """What clipdesk feeds the text tower for QUERY (random ids for a tokenizer not here)."""
    import torch

    from clipdesk.models.tokenizer import ClipTokenizer

    context = int(getattr(model, "context_length", 77))
    if vocab_size == 49408:  # CLIP's BPE: clipdesk's own tokenizer
        return torch.as_tensor(ClipTokenizer(context_length=context)([QUERY]))
    generator = torch.Generator().manual_seed(0)
    return torch.randint(1, vocab_size, (1, context), generator=generator)


def paired_ratio(backend: Any, inputs: Any, image_size: int, seconds: float, pairs: int) -> float:
    """The model's images/s over the reference model's (ViT-B-32 laion2b, random weights,
    its own 224 px inputs), timed in alternating bursts in this one process: the ratio of
    each pair is taken while the machine's other load is about the same, and the median of
    the pairs kept. On a small machine shared with other jobs this is the steadier figure."""
    import open_clip
    import torch

    from clipdesk.backends.measuring import _speed, probe_images
    from clipdesk.backends.runtimes import TorchBackend
    from clipdesk.models.catalog import catalog_entry

    reference_entry = catalog_entry(REFERENCE_NAME)
    assert reference_entry is not None
    torch.manual_seed(0)
    reference_model = open_clip.create_model(reference_entry.arch, pretrained=None).eval()
    reference = TorchBackend(reference_model, "cpu", "fp32")
    reference_inputs = probe_images(reference_entry.image_size, count=len(inputs))
    burst = max(seconds / 2, 1.0)
    ratios = []
    for _ in range(pairs):
        own = _speed(backend, inputs, burst)
        theirs = _speed(reference, reference_inputs, burst)
        ratios.append(own / theirs)
    return round(statistics.median(ratios), 3)


def measure_one(
    name: str,
    seconds: float,
    batch: int,
    queries: int,
    openvino: bool,
    threads: int,
    pairs: int = 0,
) -> dict[str, Any]:
    """Measure one catalog model in this process (the child's work)."""
    import open_clip
    import torch

    torch.set_num_threads(threads)

    from clipdesk.backends.measuring import _speed, probe_images
    from clipdesk.backends.runtimes import OpenVinoBackend, TorchBackend
    from clipdesk.backends.towers import short_text_tower
    from clipdesk.models.catalog import catalog_entry
    from clipdesk.models.tokenizer import trim_tokens

    entry = catalog_entry(name)
    assert entry is not None, name
    before = _rss_bytes()
    torch.manual_seed(0)
    model = open_clip.create_model(entry.arch, pretrained=None).eval()
    params = sum(p.numel() for p in model.parameters())
    config = open_clip.get_model_config(entry.arch) or {}
    image_size = int(config.get("vision_cfg", {}).get("image_size", entry.image_size))
    inputs = probe_images(image_size, count=batch)
    backend = TorchBackend(model, "cpu", "fp32")
    result: dict[str, Any] = {
        "params": params,
        "download_bytes": params * 4,
        "image_size": image_size,
        "images_per_s": round(_speed(backend, inputs, seconds), 2),
    }
    vocab = int(config.get("text_cfg", {}).get("vocab_size", 49408))
    tokens = _text_tokens(model, vocab)
    short = short_text_tower(model)
    if short is not None:  # clipdesk's short tower: the padding after the query is cut
        tokens = trim_tokens(tokens)
    times = []
    with torch.inference_mode():
        for _ in range(queries + 1):
            started = time.perf_counter()
            if short is not None:
                short(tokens)
            else:
                model.encode_text(tokens)
            times.append(time.perf_counter() - started)
    result["text_ms"] = round(1000 * statistics.median(times[1:]), 1)
    result["memory_bytes"] = _rss_bytes() - before
    if pairs and name != REFERENCE_NAME:
        result["x_reference"] = paired_ratio(backend, inputs, image_size, seconds, pairs)
    if openvino:
        from clipdesk.backends.onnx_export import export_visual_onnx

        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            onnx = export_visual_onnx(model, image_size, Path(tmp) / "visual.onnx")
            result["openvino_export_s"] = round(time.perf_counter() - started, 1)
            ov_backend = OpenVinoBackend(onnx, "fp32", threads=threads)
            result["openvino_images_per_s"] = round(_speed(ov_backend, inputs, seconds), 2)
    return result


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--seconds",
        str(args.seconds),
        "--batch",
        str(args.batch),
        "--queries",
        str(args.queries),
        "--threads",
        str(args.threads),
        "--pairs",
        str(args.pairs),
    ] + (["--openvino"] if args.openvino else [])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.time_box, env=env, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return {"error": f"over the {args.time_box:.0f} s time box"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:160]}
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def main() -> int:
    from clipdesk.models.catalog import CATALOG, SPEEDS_FILE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated catalog names (default: all)")
    parser.add_argument("--seconds", type=float, default=3.0, help="image timing per model")
    parser.add_argument("--batch", type=int, default=4, help="images per batch")
    parser.add_argument("--queries", type=int, default=9, help="text queries timed")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per model (1: on a small machine shared with other jobs, their load "
        "slows every model alike instead of stalling a thread pool)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="bursts of the model and of vit-b-32 alternated in one process, for its "
        "speed relative to vit-b-32 (0: from the separate runs' images/s)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="best of this many runs")
    parser.add_argument("--time-box", type=float, default=240.0, help="seconds per model run")
    parser.add_argument("--openvino", action="store_true", help="also OpenVINO fp32")
    parser.add_argument("--write", action="store_true", help=f"write {SPEEDS_FILE.name}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = measure_one(
            args.child,
            args.seconds,
            args.batch,
            args.queries,
            args.openvino,
            args.threads,
            args.pairs,
        )
        print(json.dumps(figures), flush=True)
        return 0

    print_machine("The catalog's models on this CPU")
    names = args.only.split(",") if args.only else [e.name for e in CATALOG]
    entries = {e.name: e for e in CATALOG}
    if REFERENCE_NAME not in names:
        names.insert(0, REFERENCE_NAME)  # every speed is relative to it, in the same run
    results: dict[str, dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for name in names:
            started = time.perf_counter()
            got = run_child(name, args)
            print(
                f"round {round_ + 1} {name}: {got} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            best = results.get(name)
            if "error" in got and best is not None:
                continue
            if best is None or "error" in best or got["images_per_s"] > best["images_per_s"]:
                results[name] = got
    reference = results.get(REFERENCE_NAME, {}).get("images_per_s")
    print()
    print(
        f"CPU: {cpu_model()} ({usable_cores()} cores; "
        f"{' '.join(cpu_flags()) or 'no flags of note'})"
        f"; {args.threads} thread(s), torch fp32, batch {args.batch}, "
        f"{args.seconds:.0f} s per model, best of "
        f"{args.rounds}, random weights"
    )
    print()
    ov = " OpenVINO fp32 img/s |" if args.openvino else ""
    print(
        f"| model | arch | image px | torch fp32 img/s | x {REFERENCE_NAME} |{ov} ms/query "
        "| download | catalog says | memory | license |"
    )
    print(
        "|---|---|---:|---:|---:|" + ("---:|" if args.openvino else "") + "---:|---:|---:|---:|---|"
    )
    for name in names:
        entry, got = entries[name], results[name]
        if "error" in got:
            print(f"| {name} | {entry.arch} | not measured: {got['error']} |")
            continue
        ratio = got.get("x_reference", 1.0 if name == REFERENCE_NAME else None)
        if ratio is None and reference:
            ratio = got["images_per_s"] / reference
        share = f"{ratio:.2f}" if ratio is not None else "-"
        ov_cell = f" {got.get('openvino_images_per_s', '-')} |" if args.openvino else ""
        print(
            f"| {name} | {entry.arch} | {got['image_size']} | {got['images_per_s']:.1f} | {share} |"
            f"{ov_cell} {got['text_ms']:.1f} | {_mb(got['download_bytes'])} | "
            f"{_mb(entry.size_bytes)} | {_mb(got['memory_bytes'])} | {entry.license_text} |"
        )
    if args.write:
        measured = {n: r for n, r in results.items() if "error" not in r}
        payload = {
            "cpu": cpu_model(),
            "flags": cpu_flags(),
            "cores": usable_cores(),
            "backend": "torch-fp32",
            "batch": args.batch,
            "threads": args.threads,
            "measured": time.strftime("%Y-%m-%d"),
            "note": "random weights (same compute); bench/bench_catalog.py",
            "models": measured,
        }
        SPEEDS_FILE.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", "utf-8")
        print(f"\nwrote {SPEEDS_FILE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
