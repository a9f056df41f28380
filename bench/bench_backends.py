"""Image-encoder backends side by side: speed, fidelity, and how close to the CPU's peak.

ViT-B-32 (seeded random weights: the compute of the real model), batch 32, 224 px, one
process, every backend on the same inputs in the same run:

- images/s of the image tower alone, and the ratio to the plain fp32 torch loop;
- min cosine to fp32 and the share of photos whose top-10 neighbours are unchanged, on
  real photos (clothing-small when ../shared/data is present, else the committed ones);
- export-fp32/-bf16: the same tower from `clipdesk models export` (OpenVINO IR, fp16
  weights), as the CPU bundle runs it; its setup time includes the export;
- achieved GFLOP/s against a rough peak: cores x clock x FLOPs/cycle (AVX-512: 2 FMA units
  x 16 fp32 lanes x 2 = 64 FLOPs/cycle/core; avx512_bf16 doubles it; AMX far more).

    .venv/bin/python bench/bench_backends.py [--model ViT-B-32:random] [--photos 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._common import DATA, REPO, cpu_flags, print_machine

VIT_B32_GFLOP = 4.41  # image tower forward per 224 px image (fvcore count of ViT-B/32)


def _clock_ghz() -> float | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per backend")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print_machine("Image-encoder backends")
    import numpy as np

    from clipdesk import backends
    from clipdesk.encoder import ClipEncoder, ModelSpec
    from clipdesk.imaging import load_rgb

    encoder = ClipEncoder(ModelSpec.parse(args.model), "cpu")
    source = DATA / "clothing-small"
    if source.is_dir():
        paths = sorted(source.rglob("*.jpg"))
        paths = paths[:: max(len(paths) // args.photos, 1)][: args.photos]
        where = f"{len(paths)} photos spread over ../shared/data/clothing-small"
    else:
        paths = sorted((REPO / "tests" / "fixtures" / "clothing-test").rglob("*.jpg"))
        paths = paths[:: max(len(paths) // args.photos, 1)][: args.photos]
        where = f"{len(paths)} committed test photos"
    photos = np.stack(
        [encoder.preprocess_image(load_rgb(str(p), encoder.decode_side)) for p in paths]
    )
    print(f"model {args.model}; fidelity on {where}; batch {args.batch}\n")

    def encode_all(backend: backends.ImageBackend) -> np.ndarray:
        parts = [backend.encode(photos[i : i + 64]) for i in range(0, len(photos), 64)]
        out = np.concatenate(parts)
        return out / np.linalg.norm(out, axis=1, keepdims=True)  # type: ignore[no-any-return]

    timing_batch = photos[: args.batch]
    if len(timing_batch) < args.batch:
        timing_batch = np.resize(timing_batch, (args.batch, *photos.shape[1:]))
    names = ["torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16"]
    names += ["export-fp32", "export-bf16"]  # the exported model's runtime (no torch)
    reference = encoder.image_backend
    export_folder = None
    expected = encode_all(reference)
    ghz = _clock_ghz()
    cores = len(os.sched_getaffinity(0))
    flags = set(cpu_flags())
    rows = []
    for name in names:
        try:
            started = time.perf_counter()
            if name.startswith("export-"):
                # `clipdesk models export`: IR files, fp16 weights where faithful
                if export_folder is None:
                    import tempfile

                    from clipdesk.export import export_model

                    exports = Path(tempfile.mkdtemp(prefix="clipdesk-bench-export-"))
                    export_folder = export_model(encoder, exports, probe=photos[:64])
                backend = backends.OpenVinoBackend(
                    export_folder / "visual.xml", name.removeprefix("export-")
                )
            else:
                backend = reference if name == "torch-fp32" else encoder._make_backend(name)
            setup = time.perf_counter() - started
        except Exception as exc:
            print(f"{name:14s} not available: {exc}")
            continue
        got = encode_all(backend)
        cosine = float(np.min(np.sum(expected * got, axis=1)))
        agreement = backends.top10_agreement(expected, got)
        rate = backends._speed(backend, timing_batch, args.seconds)
        rows.append((name, rate, cosine, agreement, setup))
    base = rows[0][1]
    print(
        f"{'backend':14s} {'images/s':>9s} {'x fp32':>7s} {'cos min':>9s} {'same top10':>10s} "
        f"{'GFLOP/s':>8s} {'of peak':>8s} {'setup s':>8s}  faithful"
    )
    for name, rate, cosine, agreement, setup in rows:
        gflops = rate * VIT_B32_GFLOP
        per_cycle = 64 * (2 if "bf16" in name and "avx512_bf16" in flags else 1)
        peak = cores * ghz * per_cycle if ghz else None
        share = f"{gflops / peak:8.0%}" if peak else "       ?"
        faithful = cosine >= backends.FAITHFUL_COSINE and agreement >= backends.FAITHFUL_AGREEMENT
        print(
            f"{name:14s} {rate:9.1f} {rate / base:7.2f} {cosine:9.6f} {agreement:10.1%} "
            f"{gflops:8.0f} {share} {setup:8.1f}  {'yes' if faithful else 'NO'}"
        )
    if ghz:
        print(
            f"\npeak assumed: {cores} cores x {ghz:.2f} GHz x 64 FLOP/cycle (fp32 AVX-512), "
            "x2 for bf16 with avx512_bf16; AMX not counted"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
