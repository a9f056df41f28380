from __future__ import annotations

import os
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image

from clipdesk.imaging import (
    ImageRejected,
    fingerprint,
    load_rgb,
    load_rgb_full,
    read_header,
)
from clipdesk.models.encoder import ClipEncoder
from tests.helpers import fixture_photo_paths, make_bad_files


def _photo_with_exif(
    path: Path, size: tuple[int, int], orientation: int | None = None, taken: str | None = None
) -> None:
    img = Image.new("RGB", size, (200, 30, 30))
    # A marker in the top-left corner shows which way the image was turned.
    img.paste((0, 0, 255), (0, 0, size[0] // 4, size[1] // 4))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    img.save(path, quality=90, exif=exif.tobytes())


def test_every_bad_input_is_rejected_with_a_reason(tmp_path: Path) -> None:
    expected = make_bad_files(tmp_path, fixture_photo_paths()[0])
    for name, reason in expected.items():
        with pytest.raises(ImageRejected, match=reason):
            load_rgb(str(tmp_path / name), 224)


def test_missing_file_is_reported_as_vanished(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected, match="vanished"):
        load_rgb(str(tmp_path / "gone.jpg"), 224)


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(ImageRejected, match=r"above the 0\.08 MP limit"):
        read_header(str(path), max_pixels=80_000)
    assert read_header(str(path)).width == 300


def test_header_reads_exif_date_and_rotated_size(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    _photo_with_exif(path, (400, 300), orientation=6, taken="2021:07:04 18:30:00")
    header = read_header(str(path))
    assert (header.width, header.height) == (300, 400)  # shown upright
    assert header.taken_at == time.mktime((2021, 7, 4, 18, 30, 0, 0, 0, -1))


def test_no_exif_means_no_date(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (10, 10)).save(path)
    assert read_header(str(path)).taken_at is None


def test_load_applies_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    _photo_with_exif(path, (400, 300), orientation=6)
    img = load_rgb(str(path), 64)
    assert img.width < img.height  # turned upright
    # Orientation 6 turns the image 90 degrees clockwise: top-left goes to top-right.
    r, _g, b = cast(tuple[int, int, int], img.getpixel((img.width - 5, 5)))  # RGB
    assert b > 150 and r < 100


def test_draft_mode_decodes_large_jpegs_small_but_not_below_the_model_size(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 10)).save(path, quality=85)
    fast = load_rgb(str(path), 224)
    assert min(fast.size) >= 224
    assert fast.size[0] <= 4000 // 4  # decoded at 1/8 or 1/4 scale, not full size
    assert load_rgb_full(str(path)).size == (4000, 3000)


def test_transparent_and_grey_images_become_rgb(tmp_path: Path) -> None:
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(rgba)
    grey = tmp_path / "g.png"
    Image.new("L", (20, 20), 128).save(grey)
    palette = tmp_path / "p.gif"
    Image.new("P", (20, 20), 0).save(palette, transparency=0)
    for path in (rgba, grey, palette):
        img = load_rgb(str(path), 16)
        assert img.mode == "RGB"
    assert load_rgb(str(rgba), 16).getpixel((1, 1)) == (255, 255, 255)  # shown on white


@pytest.mark.parametrize(
    "fmt,suffix",
    [("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("GIF", ".gif"), ("HEIF", ".heic")],
)
def test_other_formats_load(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(path, format=fmt)
    assert load_rgb(str(path), 32).size == (64, 48)
    assert read_header(str(path)).width == 64


def test_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    a = tmp_path / "a.jpg"
    b = tmp_path / "b.jpg"
    data = fixture_photo_paths()[0].read_bytes()
    a.write_bytes(data)
    b.write_bytes(data)
    assert fingerprint(str(a), len(data)) == fingerprint(str(b), len(data))
    b.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert fingerprint(str(a), len(data)) != fingerprint(str(b), len(data))


def test_large_file_fingerprint_samples_head_and_tail(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    payload = os.urandom(3 << 20)
    big.write_bytes(payload)
    first = fingerprint(str(big), len(payload))
    changed = bytearray(payload)
    changed[-10] ^= 0xFF
    big.write_bytes(bytes(changed))
    assert fingerprint(str(big), len(payload)) != first


def test_fast_preprocess_is_bit_identical_to_open_clip(tiny_encoder: ClipEncoder) -> None:
    from PIL import Image

    encoder = tiny_encoder
    images = [Image.open(p).convert("RGB") for p in fixture_photo_paths()[:3]]
    images.append(Image.new("RGB", (300, 90), (250, 3, 7)))
    for image in images:
        ours = encoder.preprocess_image(image)
        reference = encoder.preprocess(image).numpy()
        assert ours.shape == reference.shape and (ours == reference).all()


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_the_fast_jpeg_path_equals_pillow(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    from clipdesk import imaging

    rng = np.random.default_rng(orientation)
    pixels = (rng.random((900, 1300, 3)) * 255).astype(np.uint8)
    pixels[:300, :400] = (250, 10, 10)  # a corner to see the orientation by
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(pixels).save(path, quality=90, exif=exif)
    for min_side in (64, 100, 150, 448):  # scaled 1/8, 1/4 (Pillow's powers of two), whole
        fast = imaging._load_jpeg_fast(str(path), min_side, imaging.DEFAULT_MAX_PIXELS)
        assert fast is not None
        with Image.open(path) as img:
            if min(img.size) >= imaging._DRAFT_FROM * min_side:
                img.draft("RGB", (min_side, min_side))
            img.load()
            slow = ImageOps.exif_transpose(img).convert("RGB")
        assert fast.size == slow.size
        assert np.array_equal(np.asarray(fast), np.asarray(slow))


def test_the_fast_path_leaves_odd_jpegs_to_pillow(tmp_path: Path) -> None:
    from clipdesk import imaging

    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (0, 255, 0, 0)).save(cmyk)
    assert imaging._load_jpeg_fast(str(cmyk), 16, imaging.DEFAULT_MAX_PIXELS) is None
    assert imaging.load_rgb(str(cmyk), 16).mode == "RGB"
    png = tmp_path / "not-a-jpeg.jpg"
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert imaging._load_jpeg_fast(str(png), 16, imaging.DEFAULT_MAX_PIXELS) is None
