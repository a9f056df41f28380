"""The CUDA path, ready for a machine with an NVIDIA GPU: ViT-B-32 in fp16, the raw model
forward against the whole pipeline (decode, preprocess, encode, SQLite, HNSW) on 12 MP-class
JPEGs, in one run. Runs on the CPU too (``--device cpu``, a smoke test).

    .venv/bin/python bench/bench_gpu.py [--photos 512] [--device cuda]

The photos are made here (photo-like 4000x3000 JPEGs: gradients, shapes and grain), so the
script needs nothing outside the repository. Target on one H100: >= 1000 photos/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_machine


def _make_photo(args: tuple[Path, int]) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    path, seed = args
    rng = np.random.default_rng(seed)
    height, width = 3000, 4000
    ys, xs = np.mgrid[0:height:8, 0:width:8].astype(np.float32)
    base = np.stack(
        [np.sin((xs + ys) / rng.uniform(80, 400) + c) * 100 + 128 for c in rng.uniform(0, 6, 3)],
        -1,
    )
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((width, height))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(50, 600))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.integers(0, 255, 3).tolist()))
    grain = rng.normal(0, 6, (height, width, 3))
    pixels = (np.asarray(image, np.float32) + grain).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def decode_ceilings(paths: list[Path], encoder: Any) -> None:
    """What decoding + preprocessing alone can deliver, per photo the same work: clipdesk's
    CPU path (libjpeg-turbo DCT scaling, then the model's resize, crop and normalisation)
    on every core, and nvJPEG on the GPU (torchvision.io.decode_jpeg, batched) with the
    resize (shorter side to the model's input, antialiased), crop and normalisation there:
    the alternative when the CPU path is slower than the model."""
    from concurrent.futures import ThreadPoolExecutor

    from clipdesk.imaging import load_rgb

    side = encoder.decode_side
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(lambda p: encoder.preprocess_image(load_rgb(str(p), side)), paths))
    rate = len(paths) / (time.perf_counter() - started)
    print(f"decode ceiling, CPU (load_rgb + preprocess, {cores} threads): {rate:.0f} photos/s")
    if encoder.device != "cuda":
        return
    import torch

    from clipdesk.imaging import read_plain_jpeg
    from clipdesk.indexing.device_decode import DeviceDecoder, resize_plan

    plan = resize_plan(encoder)
    if plan is None:
        print("decode ceiling, nvJPEG: not for this model's preprocessing")
        return
    decoder = DeviceDecoder(plan, "cuda")
    jpegs = [read_plain_jpeg(str(p)) for p in paths]  # the pipeline's threads read them
    if any(j is None for j in jpegs):
        raise SystemExit("a generated photo is not a plain JPEG")
    decoder.prepare(jpegs[:32])  # warm-up: nvJPEG handles, pinned buffers, kernels
    torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(0, len(jpegs), 256):
        prepared = decoder.prepare(jpegs[i : i + 256])  # type: ignore[arg-type]
        if any(t is None for t in prepared):
            raise SystemExit("nvJPEG failed on a generated photo")
        torch.cat(prepared)
    torch.cuda.synchronize()
    rate = len(jpegs) / (time.perf_counter() - started)
    print(
        "decode ceiling, nvJPEG (clipdesk's DeviceDecoder: batched decode, then resize, "
        f"crop and normalisation on the GPU; bytes already read): {rate:.0f} photos/s"
    )


def pipeline(work: Path, photos: Path, encoder: Any, device: str, label: str) -> float:
    """The whole pipeline on a fresh library: scan, decode, encode, SQLite, HNSW."""
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    library = work / f"library-{label.replace(' ', '-')}"
    app = Clipdesk(Library(library))
    app.preload(encoder)
    app.add_folders([photos])
    count = sum(1 for _ in photos.glob("*.jpg"))
    started = time.perf_counter()
    for _progress in app.index(encoder.spec, device):
        pass
    rate = count / (time.perf_counter() - started)
    app.library.close()
    shutil.rmtree(library, ignore_errors=True)
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="ViT-B-32:random")
    args = parser.parse_args()
    print_machine("The GPU path (fp16, ViT-B-32)", torch_threads=True)
    import numpy as np
    import torch

    from clipdesk.indexing.embedding import DEFAULT_BATCH_SIZE
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    if args.device == "cuda" and torch.cuda.is_available():
        print(f"gpu       : {torch.cuda.get_device_name(0)}")
    work = Path(tempfile.mkdtemp(prefix="clipdesk-gpu-"))
    photos = work / "photos"
    photos.mkdir()
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_make_photo, [(photos / f"{i:05d}.jpg", i) for i in range(args.photos)]))
    print(f"{args.photos} photos of 4000x3000 made in {time.perf_counter() - started:.0f} s")

    encoder = ClipEncoder(ModelSpec.parse(args.model), args.device)
    encoder.select_backend()  # now, not inside the first pipeline run (instant on CUDA)
    decode_ceilings(sorted(photos.glob("*.jpg")), encoder)
    batch_size = encoder.cuda_batch_size(DEFAULT_BATCH_SIZE)
    print(f"device: {encoder.device_reason}; batch {batch_size} (from free memory on CUDA)")
    batch = np.random.default_rng(0).standard_normal(
        (batch_size, 3, encoder.image_size, encoder.image_size), dtype=np.float32
    )
    encoder.encode_batch(batch)  # warm-up
    if encoder.device == "cuda":
        torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < 5 or done < 2 * batch_size:
        encoder.encode_batch(batch)
        done += batch_size
    raw = done / (time.perf_counter() - started)
    print(f"raw model forward (host array in, vectors out): {raw:.0f} images/s")

    from clipdesk.indexing.device_decode import DEVICE_DECODE_ENV

    # nvJPEG is the default on CUDA; "0" decodes on the CPU's cores, as before. Without
    # CUDA, CLIPDESK_GPU_DECODE=1 runs the device path on torchvision's CPU decoder (a smoke
    # test of this script).
    modes = [("decoding on the GPU", "1"), ("decoding on the CPU", "0")]
    both = encoder.device == "cuda" or os.environ.get(DEVICE_DECODE_ENV) == "1"
    for label, setting in modes if both else modes[1:]:
        os.environ[DEVICE_DECODE_ENV] = setting
        whole = pipeline(work, photos, encoder, args.device, label)
        print(
            f"whole pipeline, {label} (scan, decode, encode, SQLite, HNSW): {whole:.0f} "
            f"photos/s, {whole / raw:.2f} of the raw forward (target on an H100: >= 1000)"
        )
    os.environ.pop(DEVICE_DECODE_ENV, None)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
