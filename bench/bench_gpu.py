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

    side, size = encoder.decode_side, encoder.image_size
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(lambda p: encoder.preprocess_image(load_rgb(str(p), side)), paths))
    rate = len(paths) / (time.perf_counter() - started)
    print(f"decode ceiling, CPU (load_rgb + preprocess, {cores} threads): {rate:.0f} photos/s")
    if encoder.device != "cuda":
        return
    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device="cuda").view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device="cuda").view(1, 3, 1, 1)

    def prepare(image: Any) -> Any:
        height, width = image.shape[-2:]
        scale = size / min(height, width)
        shape = (max(size, round(height * scale)), max(size, round(width * scale)))
        resized = F.interpolate(image[None].float(), size=shape, mode="bicubic", antialias=True)
        top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
        crop = resized[:, :, top : top + size, left : left + size] / 255
        return (crop - mean) / std

    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    for chunk in (32, 128):
        decode_jpeg(datas[:chunk], device="cuda")  # warm-up: nvJPEG handles, pinned buffers
        torch.cuda.synchronize()
        started = time.perf_counter()
        for i in range(0, len(datas), chunk):
            images = decode_jpeg(datas[i : i + chunk], device="cuda")
            batch = torch.cat([prepare(image) for image in images])
        torch.cuda.synchronize()
        rate = len(datas) / (time.perf_counter() - started)
        print(
            f"decode ceiling, nvJPEG (batches of {chunk}, + preprocess on the GPU): "
            f"{rate:.0f} photos/s"
        )
        del images, batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="ViT-B-32:random")
    args = parser.parse_args()
    print_machine("The GPU path (fp16, ViT-B-32)", torch_threads=True)
    import numpy as np
    import torch

    from clipdesk.embedding import DEFAULT_BATCH_SIZE
    from clipdesk.encoder import ClipEncoder, ModelSpec
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

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

    app = Clipdesk(Library(work / "library"))
    app._encoders[encoder.spec.key] = encoder
    app.add_folders([photos])
    started = time.perf_counter()
    first_embed = None
    for progress in app.index(encoder.spec, args.device):
        if progress.phase == "embed" and first_embed is None:
            first_embed = time.perf_counter()
    whole = args.photos / (time.perf_counter() - started)
    print(
        f"whole pipeline (scan, decode, encode, SQLite, HNSW): {whole:.0f} photos/s, "
        f"{whole / raw:.2f} of the raw forward (target on an H100: >= 1000 photos/s)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
