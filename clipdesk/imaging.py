"""Reading the user's images, safely and only for reading.

Every failure becomes :class:`ImageRejected` with a reason a person can act on, so one
bad file is recorded and skipped instead of stopping a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # libjpeg-turbo's scaled decoding without Pillow's overhead (bench/README.md)
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency; Pillow's draft mode does the same
    simplejpeg = None

try:  # HEIC/HEIF (phone photos) through libheif
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is a hard dependency
    HEIF_SUPPORTED = False

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".hif",
    }
)

# Above this many pixels an image is refused as a likely decompression bomb. Large
# panoramas (100+ MP) still pass; a 40000x40000 trap (1600 MP) does not.
DEFAULT_MAX_PIXELS = 250_000_000

# We check the limit ourselves with a clear reason; Pillow's own check stays as a
# backstop at twice the limit instead of warning about ordinary 100 MP panoramas.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME_DIGITIZED = 36868
_DATETIME = 306
_MAKE = 271
_MODEL = 272

# Files up to this size are hashed whole; larger ones by size + head + tail, which tells
# photos apart (their compressed data differs from the first bytes on) at a fixed cost.
_FULL_HASH_LIMIT = 1 << 20
_SAMPLE = 256 * 1024


# DCT-scaled decoding only for JPEGs whose shorter side is at least this many times
# min_side. At 2, a 5.7 MP photo would decode at 1/2 and resize 3x faster, and ViT-B-32
# (random weights) kept a min cosine of 0.99986 to a full decode; but the project's trained
# model then moved to 0.9876 on its 400 px test photos and its rankings no longer matched
# open_clip's. DCT scaling is a crude filter; 4 is what the trained model tolerates.
_DRAFT_FROM = 4


class ImageRejected(Exception):
    """This file cannot be used; ``str(exc)`` says why in plain words."""


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    taken_at: float | None  # seconds since the epoch, from EXIF, or None
    camera: str = ""  # EXIF make and model ("Canon EOS 5D"), "" when the file has none


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def fingerprint(path: str, size: int) -> str:
    """A content fingerprint that survives renames and moves (not a security hash)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(size.to_bytes(8, "little"))
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            digest.update(fh.read())
        else:
            digest.update(fh.read(_SAMPLE))
            fh.seek(size - _SAMPLE)
            digest.update(fh.read(_SAMPLE))
    return digest.hexdigest()


def _parse_exif_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    value = value.strip().rstrip("\x00")
    try:
        # EXIF has no time zone; the camera's local time is what people expect to see.
        return time.mktime(time.strptime(value[:19], "%Y:%m:%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def _exif_text(value: object) -> str:
    """An EXIF ASCII field as text: NULs, padding and stray whitespace gone."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return ""
    return " ".join(value.replace("\x00", " ").split())


def camera_name(make: object, model: object) -> str:
    """The camera as people name it, from EXIF Make and Model: "Canon EOS 5D", not
    "Canon Canon EOS 5D" where the model repeats the maker ("NIKON CORPORATION" +
    "NIKON D750" gives "NIKON D750"); "" when neither is recorded."""
    make_text, model_text = _exif_text(make), _exif_text(model)
    if make_text and model_text.lower().startswith(make_text.split()[0].lower()):
        return model_text
    return " ".join(part for part in (make_text, model_text) if part)


def _reason(exc: BaseException, path: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file vanished before it could be read"
    if isinstance(exc, PermissionError):
        return "permission denied: clipdesk cannot read this file"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"refused as a possible decompression bomb: {exc}"
    if isinstance(exc, UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        if empty:
            return "empty file (0 bytes)"
        return "not an image that can be read (unknown format or corrupt header)"
    if isinstance(exc, SyntaxError | ValueError | EOFError | OSError):
        text = str(exc) or type(exc).__name__
        if "truncated" in text:
            return f"truncated image: {text}"
        return f"corrupt image data: {text}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageRejected(
            f"refused as a possible decompression bomb: {width}x{height} px "
            f"({width * height / 1e6:.0f} MP) is above the {max_pixels / 1e6:g} MP limit"
        )


# Every 8x8 block of a Huffman-coded JPEG (SOF0-3, 5-7) takes at least one bit of the
# largest component, whatever the content (a DC code; progressive end-of-band runs cover
# only AC scans). Arithmetic coding (SOF9+) has no such floor.
_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
# Deflate's best ratio is 1032:1: a PNG's compressed rows are at least this share.
_DEFLATE_FLOOR = 1 / 1032


def _jpeg_sof(path: str) -> int | None:
    """The frame marker (0xC0 baseline, 0xC2 progressive, ...) of a JPEG file, read by
    skipping segment headers only; None when not found."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            return None
        for _ in range(256):  # segments before the frame: APPn, tables, comments
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0xFF:
                return None
            marker, length = head[1], int.from_bytes(head[2:4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return marker
            fh.seek(length - 2, os.SEEK_CUR)
    return None


def _check_claimed_size(img: Image.Image, path: str) -> None:
    """Refuse a header whose size the file is too small to hold (a crafted or cut file),
    before anything is decoded or allocated for it."""
    width, height = img.size
    needed = 0
    if img.format == "JPEG" and _jpeg_sof(path) in _HUFFMAN_SOF:
        needed = -(-width // 8) * -(-height // 8) // 8
    elif img.format == "PNG":
        bits = {"1": 1, "L": 8, "P": 8, "LA": 16, "RGB": 24, "RGBA": 32}.get(img.mode, 8)
        needed = int(height * (1 + width * bits // 8) * _DEFLATE_FLOOR)
    if not needed:
        return
    size = os.path.getsize(path)
    if size < needed:
        raise ImageRejected(
            f"the header claims {width}x{height} px, but the file has only {size:,} bytes, "
            f"too few for that size (at least {needed:,}): a damaged or crafted file, "
            "not decoded"
        )


def _open(path: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def read_header(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Pixel size, EXIF date and camera, reading only the file's header."""
    try:
        with _open(path) as img:
            width, height = img.size
            _check_pixels(width, height, max_pixels)
            _check_claimed_size(img, path)
            taken = None
            camera = ""
            exif = img.getexif()
            if exif:
                camera = camera_name(exif.get(_MAKE), exif.get(_MODEL))
                sub = exif.get_ifd(_EXIF_IFD)
                for value in (
                    sub.get(_DATETIME_ORIGINAL),
                    sub.get(_DATETIME_DIGITIZED),
                    exif.get(_DATETIME),
                ):
                    taken = _parse_exif_time(value)
                    if taken is not None:
                        break
            orientation = exif.get(0x0112) if exif else None
            if orientation in (5, 6, 7, 8):  # shown rotated by 90 degrees
                width, height = height, width
            return ImageHeader(width, height, taken, camera)
    except ImageRejected:
        raise
    except Exception as exc:
        raise ImageRejected(_reason(exc, path)) from exc


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1-8 applied to an HxWxC array (as ImageOps.exif_transpose does)."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(pixels)
    return pixels


def _draft_factor(width: int, height: int, min_side: int) -> int:
    """The scale-down Pillow's draft mode picks: the largest of 8, 4, 2 that keeps both
    sides >= min_side; 1 (a whole decode) for photos under _DRAFT_FROM x min_side."""
    if min(width, height) < _DRAFT_FROM * min_side:
        return 1
    fits = min(width // min_side, height // min_side)
    return next(f for f in (8, 4, 2, 1) if fits >= f)


@dataclass(frozen=True)
class PlainJpeg:
    """A baseline or progressive JPEG in RGB or grey, read whole but not decoded yet."""

    data: bytes
    width: int
    height: int
    orientation: int  # EXIF 1-8, applied after decoding


def read_plain_jpeg(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> PlainJpeg | None:
    """The bytes and header of a plain JPEG, for a fast decoder (libjpeg-turbo here, nvJPEG
    on a GPU). None: not one (CMYK, another format, an unreadable header), so let Pillow
    decode it, which handles or explains the rest. Raises ImageRejected over max_pixels."""
    if simplejpeg is None:
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):
            return None  # CMYK and friends: Pillow converts them properly
        _check_pixels(width, height, max_pixels)
        with Image.open(io.BytesIO(data)) as header:  # reads the EXIF only
            _check_claimed_size(header, path)
            orientation = int(header.getexif().get(0x0112, 1) or 1)
    except ImageRejected:
        raise
    except Exception:
        return None
    return PlainJpeg(data, width, height, orientation if 1 <= orientation <= 8 else 1)


# Memory one decoded pixel takes at the peak of decoding and converting it (the decoded
# image, its upright copy, the allocator's slack): 249 MP PNGs took 4.8 GB for two in
# flight (9.6 bytes a pixel); one 150 MP PNG at a time, 1.26 GB (8.4).
DECODE_BYTES_PER_PIXEL = 10
# Share of the memory available when a run starts that its decoding in flight may take.
DECODE_MEMORY_SHARE = 0.25

# Told the pixels an image will decode to, before it is decoded (see PixelBudget).
Hold = Callable[[int], None]


def available_memory() -> int | None:
    """Bytes of memory available to start new work (Linux: MemAvailable of
    /proc/meminfo); None where that cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


class PixelBudget:
    """Pixels that may be decoded at once by all decode threads together.

    A thread acquires an image's decoded pixels before decoding it and releases them after
    its resize; it waits while the others hold the budget. One image is always let through
    when nothing else is held, so an image larger than the budget still decodes (alone)."""

    def __init__(self, pixels: int) -> None:
        self.capacity = max(int(pixels), 1)
        self._held = 0
        self._peak = 0
        self._free = threading.Condition()

    @classmethod
    def for_memory(cls, available: int | None, max_pixels: int) -> PixelBudget:
        """DECODE_MEMORY_SHARE of ``available`` bytes, and never less than one image of
        ``max_pixels`` (the largest accepted)."""
        if available is None:
            return cls(2 * max_pixels)  # unknown memory: two of the largest at once
        share = int(available * DECODE_MEMORY_SHARE / DECODE_BYTES_PER_PIXEL)
        return cls(max(share, max_pixels))

    @classmethod
    def for_this_machine(cls, max_pixels: int) -> PixelBudget:
        return cls.for_memory(available_memory(), max_pixels)

    @property
    def held(self) -> int:
        return self._held

    @property
    def peak(self) -> int:
        """The most pixels held at once so far."""
        return self._peak

    def acquire(self, pixels: int) -> None:
        with self._free:
            self._free.wait_for(lambda: self._held == 0 or self._held + pixels <= self.capacity)
            self._held += pixels
            self._peak = max(self._peak, self._held)

    def release(self, pixels: int) -> None:
        with self._free:
            self._held -= pixels
            self._free.notify_all()


@contextlib.contextmanager
def decoded_rgb(
    path: str,
    min_side: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: PixelBudget | None = None,
) -> Iterator[Image.Image]:
    """:func:`load_rgb` within ``budget``: the image's decoded pixels are held from before
    its decoding to the end of the ``with`` block (resize it there)."""
    held: list[int] = []

    def hold(pixels: int) -> None:
        if budget is not None and not held:
            budget.acquire(pixels)
            held.append(pixels)

    try:
        yield _load_rgb(path, min_side, max_pixels, hold)
    finally:
        if budget is not None and held:
            if held[0] >= _TRIM_FROM_PIXELS:
                _return_freed_memory()
            budget.release(held[0])


# An image this large (64 MB and more decoded) gives its memory back to the system when
# done: glibc keeps what a thread freed in that thread's arena, so four decode threads
# taking turns on 150 MP PNGs still peaked at 2.7 GB, one image's memory four times over.
_TRIM_FROM_PIXELS = 1 << 24


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc (musl): nothing to call
        return None


def _return_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _load_jpeg_fast(
    path: str, min_side: int, max_pixels: int, hold: Hold | None = None
) -> Image.Image | None:
    """libjpeg-turbo through simplejpeg: the same DCT-scaled decode as Pillow's draft
    mode, without Pillow's per-image overhead. None: let Pillow decode it (not a plain
    RGB/grey JPEG, or anything odd, which Pillow then explains)."""
    jpeg = read_plain_jpeg(path, max_pixels)
    if jpeg is None:
        return None
    factor = _draft_factor(jpeg.width, jpeg.height, min_side)
    if hold is not None:
        hold(-(-jpeg.width // factor) * -(-jpeg.height // factor))
    try:
        # libjpeg-turbo also scales by M/8; asking for exactly 1/factor of each side keeps
        # to the powers of two Pillow's draft mode uses, so both give the same pixels.
        pixels = simplejpeg.decode_jpeg(
            jpeg.data,
            colorspace="RGB",
            min_height=-(-jpeg.height // factor),
            min_width=-(-jpeg.width // factor),
        )
    except ValueError as exc:
        if "premature end" in str(exc).lower():
            # The compressed data ends before the image does: a file cut off, or a header
            # that claims far more pixels than the file holds. Pillow would fill the rest
            # with grey and call it a photo.
            raise ImageRejected(
                f"truncated image: the file ends before the {jpeg.width}x{jpeg.height} image "
                f"it announces does ({exc})"
            ) from exc
        return None
    except Exception:
        return None
    return Image.fromarray(np.ascontiguousarray(_orient(pixels, jpeg.orientation)))


def load_rgb(path: str, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` upright, in RGB, at no less than ``min_side`` px on each side.

    Large JPEGs use DCT scaling (libjpeg-turbo's, as Pillow's draft mode), so a 12 MP photo
    is decoded at 1/2, 1/4 or 1/8 size, never below ``min_side``. Smaller ones are decoded
    whole: there scaling saves next to nothing and full decoding is exact.
    """
    return _load_rgb(path, min_side, max_pixels)


def _load_rgb(path: str, min_side: int, max_pixels: int, hold: Hold | None = None) -> Image.Image:
    try:
        fast = _load_jpeg_fast(path, min_side, max_pixels, hold)
        if fast is not None:
            return fast
    except ImageRejected:
        raise
    except OSError as exc:
        raise ImageRejected(_reason(exc, path)) from exc
    try:
        with _open(path) as img:
            _check_pixels(img.size[0], img.size[1], max_pixels)
            _check_claimed_size(img, path)
            if img.format == "JPEG" and min(img.size) >= _DRAFT_FROM * min_side:
                img.draft("RGB", (min_side, min_side))
            if hold is not None:
                hold(img.size[0] * img.size[1])  # as decoded (after draft scaling)
            img.load()
            upright = ImageOps.exif_transpose(img)
            return _to_rgb(upright)
    except ImageRejected:
        raise
    except Exception as exc:
        raise ImageRejected(_reason(exc, path)) from exc


def load_rgb_full(path: str) -> Image.Image:
    """Decode at full size (no draft): the reference the fast path is compared with."""
    with Image.open(path) as img:
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent parts shown on white, as a viewer shows them.
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda value: value * (1 / 256)).convert("L")
    return img.convert("RGB")


def as_path_str(path: str | Path) -> str:
    return os.fspath(path)
