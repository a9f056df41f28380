"""Shared test helpers: fixture paths, the tiny model, and an independent reference.

The reference ranking is computed with open_clip directly (its own model factory and
preprocessing, full-size decode, no clipdesk code), so tests compare clipdesk against
the library it wraps rather than against itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch and clipdesk load when a helper runs, not when tests are collected
    import torch

    from clipdesk.services import Clipdesk

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE_PHOTOS = FIXTURES / "photos"
TINY_CONFIG = FIXTURES / "tiny-clip.json"
TINY_SPEC = "tiny-clip:random"
SHARED_DATA = ROOT.parent / "shared" / "data"
CLOTHING_SPEC = f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}"  # the trained model
CLOTHING_CONFIG = FIXTURES / "clothing-clip.json"


def fixture_photo_paths() -> list[Path]:
    return sorted(FIXTURE_PHOTOS.rglob("*.jpg"))


def run_cli(
    *args: str,
    library: Path,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m clipdesk`` as a separate process, as a user would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "clipdesk", "--library", str(library), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        errors="surrogateescape",
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"clipdesk {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def run_cli_json(*args: str, library: Path) -> list[dict[str, Any]]:
    result = json.loads(run_cli(*args, "--json", library=library).stdout)
    assert isinstance(result, list)
    return result


class OpenClipReference:
    """Embeds files and texts with open_clip alone, seeded like clipdesk's ``random``."""

    def __init__(
        self, arch: str, config: Path | None = None, seed: int = 0, weights: Path | None = None
    ) -> None:
        import open_clip
        import torch

        if config is not None:
            # Register under a name of our own, through a copy, so nothing is shared
            # with the code under test.
            import shutil
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="clipdesk-ref-"))
            target = folder / f"reference-{arch}.json"
            shutil.copy(config, target)
            open_clip.add_model_config(target)
            arch = target.stem
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        if weights is not None:
            open_clip.load_checkpoint(model, str(weights))
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)

    def embed_files(self, paths: list[Path]) -> np.ndarray:
        import torch
        from PIL import Image, ImageOps

        images = []
        for path in paths:
            with Image.open(path) as img:
                images.append(self.preprocess(ImageOps.exif_transpose(img).convert("RGB")))
        with torch.no_grad():
            features = self.model.encode_image(torch.stack(images)).float()
        features /= features.norm(dim=-1, keepdim=True)
        result: np.ndarray = features.numpy()
        return result

    def embed_text(self, text: str) -> np.ndarray:
        import torch

        with torch.no_grad():
            features = self.model.encode_text(self.tokenizer([text])).float()
        features /= features.norm(dim=-1, keepdim=True)
        result: np.ndarray = features.numpy()[0]
        return result


def stored_vectors(app: Clipdesk) -> tuple[list[str], np.ndarray]:
    """Every photo path with a vector in the app's library, and the vectors, by path."""
    from sqlalchemy import select

    from clipdesk.library import db

    with app.library.session() as s:
        rows = s.execute(
            select(db.Photo.path, db.Embedding.vector)
            .join(db.Embedding, db.Embedding.fingerprint == db.Photo.fingerprint)
            .order_by(db.Photo.path)
        ).all()
    return [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])


def top_k(vectors: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None) -> list[int]:
    scores = vectors @ query
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) != exclude]
    return order[:k]


def recall_at_k(got: list[str], expected: list[str]) -> float:
    return len(set(got) & set(expected)) / max(len(expected), 1)


def random_photos(folder: Path, count: int, seed: int) -> None:
    """``count`` new 64 x 64 JPEGs of noise in ``folder`` (photos no library has seen)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"new-{seed}-{i}.jpg")


def make_bad_files(folder: Path, good_jpeg: Path) -> dict[str, str]:
    """Write one file per kind of bad input; returns {file name: expected reason part}."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    data = good_jpeg.read_bytes()
    (folder / "zero-bytes.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    # Keep the headers, scramble the entropy-coded data after them.
    start = len(corrupt) // 3
    corrupt[start:] = bytes((b * 7 + 13) % 256 for b in corrupt[start:])
    (folder / "corrupt.jpg").write_bytes(bytes(corrupt))
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    # A real decompression bomb: a 1-bit PNG of 20000x15000 px (300 MP) is a few KB.
    Image.new("1", (20000, 15000)).save(folder / "bomb.png", optimize=True)
    return {
        "zero-bytes.jpg": "empty file",
        "truncated.jpg": "truncated",
        "corrupt.jpg": "corrupt",
        "notes.jpg": "not an image",
        "bomb.png": "decompression bomb",
    }


def tiny_state_dict(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict of the tiny architecture, built by open_clip under ``arch``."""
    import shutil
    import tempfile

    import open_clip
    import torch

    folder = Path(tempfile.mkdtemp(prefix="clipdesk-test-arch-"))
    try:
        shutil.copy(TINY_CONFIG, folder / f"{arch}.json")
        if arch not in open_clip.list_models():
            open_clip.add_model_config(folder / f"{arch}.json")
    finally:
        shutil.rmtree(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None)
    return {k: v.contiguous() for k, v in model.state_dict().items()}
