"""Image-encoder backends side by side: speed, fidelity, and how close to the CPU's peak.

ViT-B-32 (seeded random weights: the compute of the real model), batch 32, 224 px, one
process, every backend on the same inputs in the same run:

- images/s of the image tower alone, and the ratio to the plain fp32 open_clip loop
  (`open_clip-fp32`, issue 6's baseline; `torch-fp32` is clipdesk's class-token tower);
- fidelity to fp32 on real photos (clothing-small when ../shared/data is present, else the
  committed ones), by clipdesk's rule (clipdesk/backends/measuring.py, ``judge``): min
  cosine, the tie band derived from the backend's own score errors, the largest fp32 score
  gap between two photos it ranks the other way round ("reordered"), recall@10, and rule 1's
  share of photos whose top-10 neighbours are exactly the same set;
- export-fp32/-bf16: the same tower from `clipdesk models export` (OpenVINO IR, fp16
  weights), as the CPU bundle runs it; its setup time includes the export;
- openvino-*-streams / export-*-streams: the same towers in OpenVINO's throughput mode, each
  batch split over parallel requests (one stream of cores each);
- achieved GFLOP/s against a rough peak: cores x clock x fp32 FLOPs/cycle (see
  `fp32_flops_per_cycle`), x2 for bf16 with avx512_bf16, x4 for int8 with VNNI; AMX not
  counted; and against the fastest fp32 matrix product measured here (`of sgemm`);
- with --int8 (needs `pip install nncf`): the OpenVINO tower quantized to int8 by NNCF's
  post-training quantization, calibrated on other photos than the fidelity ones; with
  --int8-control also NNCF's accuracy-controlled variant, which puts the layers that cost
  most fidelity back in floating point until the min cosine reaches 0.9995 (minutes).

- with --pipeline N: the backend clipdesk would choose here (the fastest faithful of its
  candidates on this CPU) in the whole pipeline (decode threads, preprocess, encode, SQLite,
  HNSW: bench_pipeline.run_pipeline) on N photos, against the plain open_clip fp32 loop on
  the same photos in the same run (open, preprocess, ``encode_image``, batch by batch), with
  issue 21's target: min(2.5, 0.8 x the tower's bf16/fp32 ratio) on a CPU with native bf16,
  1.3 elsewhere.

    .venv/bin/python bench/bench_backends.py [--model ViT-B-32:random] [--photos 256] [--int8]
        [--backends torch-fp32,torch-bf16,openvino-fp32] [--pipeline 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_pipeline's own imports
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._common import (
    DATA,
    REPO,
    LoadMonitor,
    clothing_photos,
    cpu_flags,
    print_machine,
    wait_for_quiet,
    warm_page_cache,
)

# Image tower forward per 224 px image: 4.41 G multiply-adds (fvcore's "flops" of ViT-B/32
# are multiply-adds), so 8.8 GFLOP. Until 2026-12 this script counted 4.41 GFLOP, which
# halved every GFLOP/s and share-of-peak figure it printed.
VIT_B32_GFLOP = 2 * 4.41
# clipdesk's towers compute the last block for the class token only (clipdesk/backends/towers.py):
# 6.62 % fewer FLOPs (torch's FlopCounterMode: 8.725 against 8.147 GFLOP per image).
CLASS_TOKEN_GFLOP = VIT_B32_GFLOP * (1 - 0.0662)


def _clock_ghz() -> float | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def fp32_flops_per_cycle(flags: set[str]) -> int:
    """fp32 FLOPs per cycle and core: FMA units x lanes x 2. AMD before Zen 5 runs
    AVX-512 on 256-bit units (Zen 4: 2 FMA x 8 lanes), so AVX-512 does not double it there;
    Intel server cores with AVX-512 have 2 FMA units of 16 lanes (some Xeon Silver: 1)."""
    vendor, family = "", 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    vendor = value.strip()
                elif key.strip() == "cpu family":
                    family = int(value)
                    break
    except (OSError, ValueError):
        pass
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26):
        return 64
    return 32 if ("avx2" in flags or "avx512f" in flags) else 16


def peak_multiplier(name: str, flags: set[str]) -> int:
    """How many times the fp32 rate the CPU's vector units reach in this backend's format."""
    if "int8" in name and "avx512_vnni" in flags:
        return 4  # vpdpbusd: 4 int8 multiply-adds per 32-bit lane
    if "bf16" in name and "avx512_bf16" in flags:
        return 2  # vdpbf16ps: 2 bf16 multiply-adds per 32-bit lane
    return 1


def gemm_ceiling(seconds: float = 2.0) -> float:
    """GFLOP/s of the fastest fp32 matrix product here, on the MLP's shape (50 tokens x 32
    photos by 768 by 3072): torch (MKL), numpy (its BLAS) and oneDNN with packed weights."""
    import numpy as np
    import torch

    rows, inner, outer = 32 * 50, 768, 3072
    x, weight = torch.randn(rows, inner), torch.randn(outer, inner)
    bias = torch.zeros(outer)
    x_np, weight_t = x.numpy(), np.ascontiguousarray(weight.numpy().T)
    ways = [lambda: torch.nn.functional.linear(x, weight, bias), lambda: x_np @ weight_t]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        ways.append(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))
    except (AttributeError, RuntimeError):
        pass
    best = 0.0
    with torch.inference_mode():
        for way in ways:
            way()
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                way()
                done += 1
            best = max(best, 2 * rows * inner * outer * done / (time.perf_counter() - started))
    return best / 1e9


def quantize_int8(onnx_file: Path, calibration: Any, target: Path, control: Any = None) -> Path:
    """NNCF's post-training int8 quantization of the OpenVINO tower (transformer preset).
    ``control``: (validation photos, their fp32 vectors) for the accuracy-controlled one."""
    import nncf
    import numpy as np
    import openvino as ov

    model = ov.Core().read_model(str(onnx_file))
    calibration_set = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    if control is None:
        quantized = nncf.quantize(
            model,
            calibration_set,
            subset_size=len(calibration),
            model_type=nncf.ModelType.TRANSFORMER,
        )
    else:
        photos, expected = control

        def min_cosine(compiled: Any, items: Any) -> float:
            worst = 1.0
            for x, want in items:
                got = compiled(x)[0]
                got = got / np.linalg.norm(got, axis=1, keepdims=True)
                worst = min(worst, float(np.min(np.sum(got * want, axis=1))))
            return worst

        batches = [(photos[i : i + 32], expected[i : i + 32]) for i in range(0, len(photos), 32)]
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration_set,
            nncf.Dataset(batches),
            validation_fn=min_cosine,
            max_drop=0.0005,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(calibration),
            model_type=nncf.ModelType.TRANSFORMER,
        )
    ov.save_model(quantized, str(target))
    return target


def plain_open_clip(model: Any) -> Any:
    """Issue 6's baseline: the plain fp32 open_clip loop, ``model.encode_image``."""
    import numpy as np
    import torch

    from clipdesk.backends.runtimes import ImageBackend

    class PlainOpenClip(ImageBackend):
        name, description = "open_clip-fp32", "plain open_clip"

        def encode(self, batch: Any) -> Any:
            with torch.inference_mode():
                return np.asarray(model.encode_image(torch.from_numpy(batch)).numpy())

    return PlainOpenClip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per backend")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timing rounds, every backend once a round (best kept): a shared VM's noise",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--int8", action="store_true", help="also NNCF int8 (pip install nncf)")
    parser.add_argument(
        "--int8-control", action="store_true", help="also NNCF's accuracy-controlled int8 (slow)"
    )
    parser.add_argument(
        "--backends", default="", help="comma list: only these rows (open_clip-fp32 always)"
    )
    parser.add_argument(
        "--pipeline",
        type=int,
        default=0,
        metavar="N",
        help="also the chosen backend's whole pipeline against the plain loop on N photos",
    )
    args = parser.parse_args()
    print_machine("Image-encoder backends")
    import numpy as np

    from clipdesk.backends import measuring, onnx_export
    from clipdesk.backends.measuring import (
        FAITHFUL_AGREEMENT,
        FAITHFUL_COSINE,
        Fidelity,
        judge,
    )
    from clipdesk.backends.runtimes import ImageBackend, OpenVinoBackend, openvino_backend
    from clipdesk.imaging import load_rgb
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    encoder = ClipEncoder(ModelSpec.parse(args.model), "cpu")
    source = DATA / "clothing-small"
    if source.is_dir():
        every = sorted(source.rglob("*.jpg"))
        where = "photos spread over ../shared/data/clothing-small"
    else:
        every = sorted((REPO / "tests" / "fixtures" / "clothing-test").rglob("*.jpg"))
        where = "committed test photos"
    # with int8, every other photo is kept apart for its calibration
    step = max(len(every) // args.photos, 2 if (args.int8 or args.int8_control) else 1)
    paths = every[::step][: args.photos]
    where = f"{len(paths)} {where}"
    # int8 calibration: other photos of the same kind, so fidelity is not judged on them
    calibration_paths = every[1::step][: args.photos]

    def prepare(files: list[Path]) -> np.ndarray:
        return np.stack(
            [encoder.preprocess_image(load_rgb(str(p), encoder.decode_side)) for p in files]
        )

    photos = prepare(paths)
    print(
        f"model {args.model}; fidelity on {where}; batch {args.batch}; best of "
        f"{args.rounds} rounds of {args.seconds:.0f} s\n"
    )

    def encode_all(backend: ImageBackend, inputs: np.ndarray | None = None) -> np.ndarray:
        inputs = photos if inputs is None else inputs
        parts = [backend.encode(inputs[i : i + 64]) for i in range(0, len(inputs), 64)]
        out = np.concatenate(parts)
        return out / np.linalg.norm(out, axis=1, keepdims=True)  # type: ignore[no-any-return]

    timing_batch = photos[: args.batch]
    if len(timing_batch) < args.batch:
        timing_batch = np.resize(timing_batch, (args.batch, *photos.shape[1:]))
    names = ["open_clip-fp32", "torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16"]
    names += ["openvino-fp32-streams", "openvino-bf16-streams"]
    names += ["export-fp32", "export-bf16"]  # the exported model's runtime (no torch)
    names += ["export-fp32-streams", "export-bf16-streams"]
    if args.int8 or args.int8_control:
        names += ["openvino-int8", "openvino-int8-bf16"]  # int8 layers, the rest f32 / bf16
    if args.int8_control:
        names += ["ov-int8-control", "ov-int8-control-bf16"]
    if args.backends:
        wanted = {"open_clip-fp32", *(n.strip() for n in args.backends.split(","))}
        names = [n for n in names if n in wanted]
    int8_files: dict[str, Path] = {}
    reference = plain_open_clip(encoder.model)
    export_folder = None
    expected = encode_all(reference)
    ghz = _clock_ghz()
    fp32_per_cycle = fp32_flops_per_cycle(set(cpu_flags()))
    cores = len(os.sched_getaffinity(0))
    flags = set(cpu_flags())
    built: list[tuple[str, ImageBackend, Fidelity, float]] = []
    for name in names:
        backend: ImageBackend
        try:
            started = time.perf_counter()
            if name.startswith("export-"):
                # `clipdesk models export`: IR files, fp16 weights where faithful
                if export_folder is None:
                    import tempfile

                    from clipdesk.models.export import export_model

                    exports = Path(tempfile.mkdtemp(prefix="clipdesk-bench-export-"))
                    export_folder = export_model(encoder, exports, probe=photos[:64])
                backend = openvino_backend(
                    name.replace("export-", "openvino-"), export_folder / "visual.xml"
                )
            elif "int8" in name:
                kind = "control" if "control" in name else "plain"
                if kind not in int8_files:
                    import tempfile

                    onnx = onnx_export.export_visual_onnx(
                        encoder.model,
                        encoder.image_size,
                        Path(tempfile.mkdtemp(prefix="clipdesk-bench-int8-")) / "visual.onnx",
                    )
                    control = None
                    if kind == "control":  # validated on the calibration photos' vectors
                        calibration = prepare(calibration_paths)
                        control = (calibration, encode_all(reference, calibration))
                    int8_files[kind] = quantize_int8(
                        onnx,
                        prepare(calibration_paths),
                        onnx.with_name(f"int8-{kind}.xml"),
                        control,
                    )
                precision = "bf16" if name.endswith("bf16") else "fp32"
                backend = OpenVinoBackend(int8_files[kind], precision)
            else:
                backend = reference if name == "open_clip-fp32" else encoder._make_backend(name)
            setup = time.perf_counter() - started
        except Exception as exc:
            print(f"{name:14s} not available: {exc}")
            continue
        built.append((name, backend, judge(expected, encode_all(backend)), setup))
    # Timed in rounds, each backend once a round, so a busy spell slows all of them alike
    rates: dict[str, list[float]] = {name: [] for name, *_ in built}
    for round_number in range(args.rounds):
        wait_for_quiet(30)
        with LoadMonitor() as load:
            for name, backend, *_ in built:
                rates[name].append(measuring._speed(backend, timing_batch, args.seconds))
        print(
            f"round {round_number + 1}: "
            + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items())
            + f" images/s; {load.describe()}",
            flush=True,
        )
    rows = [(n, max(rates[n]), fidelity, setup) for n, _, fidelity, setup in built]
    ceiling = gemm_ceiling()
    base = rows[0][1]
    print(
        f"{'backend':20s} {'images/s':>9s} {'x fp32':>7s} {'cos min':>9s} {'tie band':>8s} "
        f"{'reordered':>9s} {'recall@10':>9s} {'same top10':>10s} {'GFLOP/s':>8s} "
        f"{'of peak':>8s} {'of sgemm':>8s} {'setup s':>8s}  faithful (rule 1)"
    )
    for name, rate, fidelity, setup in rows:
        cosine, agreement = fidelity.min_cosine, fidelity.top10_agreement
        gflops = rate * (VIT_B32_GFLOP if name == "open_clip-fp32" else CLASS_TOKEN_GFLOP)
        per_cycle = fp32_per_cycle * peak_multiplier(name, flags)
        peak = cores * ghz * per_cycle if ghz else None
        share = f"{gflops / peak:8.0%}" if peak else "       ?"
        old_rule = cosine >= FAITHFUL_COSINE and agreement >= FAITHFUL_AGREEMENT
        print(
            f"{name:20s} {rate:9.1f} {rate / base:7.2f} {cosine:9.6f} {fidelity.tie_band:8.1e} "
            f"{fidelity.reordered_gap:9.1e} {fidelity.recall_at_10:9.3f} {agreement:10.1%} "
            f"{gflops:8.0f} {share} {gflops / ceiling:8.0%} {setup:8.1f}  "
            f"{'yes' if fidelity.faithful else 'NO'} ({'yes' if old_rule else 'no'})"
        )
    if ghz:
        print(
            f"\npeak assumed: {cores} cores x {ghz:.2f} GHz x {fp32_per_cycle} fp32 FLOP/cycle, "
            "x2 for bf16 with avx512_bf16, x4 for int8 with avx512_vnni; AMX not counted. "
            "int8 rows: the int8 layers' peak, though some layers stay in f32 / bf16"
        )
    print(
        f"of sgemm: against {ceiling:.0f} GFLOP/s, the fastest fp32 matrix product measured "
        "here on the tower's largest shape (a practical fp32 ceiling: the clock the VM "
        "really runs at, not /proc/cpuinfo's)"
    )
    print(
        "tie band: the fp32 score gap this backend's noise may reorder (z sqrt(2) sigma: sigma "
        "from the MAD of its score errors, z the Bonferroni normal quantile over the pairs); "
        "reordered: the largest fp32 score gap it "
        "ranked the other way round; faithful: cos min >= 0.999 and reordered <= tie band "
        "(rule 2), in brackets rule 1 (cos min and >= 95 % same top-10 sets)"
    )
    if args.pipeline:
        whole_pipeline(encoder, rows, args.pipeline, args.batch)
    return 0


def whole_pipeline(encoder: Any, rows: list[Any], count: int, batch: int) -> None:
    """The backend clipdesk chooses here in the whole pipeline, against the plain open_clip
    fp32 loop on the same photos, in this run (issue 21's target)."""
    from bench_pipeline import run_pipeline

    from clipdesk.backends import hardware
    from clipdesk.backends.choice import BackendChoice, decide
    from clipdesk.backends.measuring import Measurement

    candidates = {"torch-fp32", "openvino-fp32"}
    if hardware.cpu_has_native_bf16():
        candidates |= {"torch-bf16", "openvino-bf16"}
    speeds = {name: rate for name, rate, *_ in rows}
    measured = [
        Measurement(n, n, rate, f.min_cosine, f.faithful, reordered_gap=f.reordered_gap)
        for n, rate, f, _ in rows
        if n in candidates
    ]
    if not measured or measured[0].name != "torch-fp32":
        print("\n--pipeline needs the torch-fp32 row (clipdesk's reference)")
        return
    chosen = decide("cpu", measured).name
    bf16 = max((speeds[n] for n in ("torch-bf16", "openvino-bf16") if n in speeds), default=0)
    native = hardware.cpu_has_native_bf16() and bf16 > 0
    target = min(2.5, 0.8 * bf16 / speeds["open_clip-fp32"]) if native else 1.3
    paths = clothing_photos(count)
    warm_page_cache(paths)

    def plain_loop() -> float:
        """What a plain script does: open each photo, open_clip's preprocess, encode_image."""
        import torch
        from PIL import Image

        started = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(paths), batch):
                images = []
                for path in paths[i : i + batch]:
                    with Image.open(path) as image:
                        images.append(encoder.preprocess(image.convert("RGB")))
                encoder.model.encode_image(torch.stack(images))
        return len(paths) / (time.perf_counter() - started)

    encoder.image_backend = encoder._make_backend(chosen)
    encoder.backend_choice = BackendChoice(chosen, "chosen by bench_backends", [])
    print(f"\n-- whole pipeline, {len(paths)} photos, chosen backend {chosen} --")
    loops, pipes = [], []
    for _ in range(2):  # interleaved, best of two: a shared machine only slows a run
        wait_for_quiet(10)
        with LoadMonitor() as load:
            loops.append(plain_loop())
        print(f"plain open_clip fp32 loop: {loops[-1]:6.1f} photos/s; {load.describe()}")
        wait_for_quiet(10)
        with LoadMonitor() as load:
            pipes.append(run_pipeline(encoder, paths, batch, None, True)["rate_total"])
        print(f"pipeline ({chosen}):  {pipes[-1]:6.1f} photos/s; {load.describe()}", flush=True)
    ratio = max(pipes) / max(loops)
    print(
        f"pipeline / plain loop: {ratio:.2f}x (target {target:.2f}x: "
        f"{'met' if ratio >= target else 'NOT met'}); chosen tower alone "
        f"{speeds[chosen] / speeds['open_clip-fp32']:.2f}x open_clip-fp32; load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
