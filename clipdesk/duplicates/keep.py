"""Which photo of a group to keep: the facts of each photo and the suggestion.

The files are only read: a header, and a small decode for the sharpness.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipdesk.imaging import ImageRejected, load_rgb

# The sharpness is measured on every photo at one size, so a copy saved smaller is not
# taken for a sharper one (its resolution counts on its own, below).
SHARPNESS_SIDE = 256
# EXIF fields a camera writes and an editor or a messenger app often drops.
_EXIF_FIELDS = (
    271,  # Make
    272,  # Model
    306,  # DateTime
    274,  # Orientation
)
_EXIF_IFD_FIELDS = (
    36867,  # DateTimeOriginal
    33434,  # ExposureTime
    33437,  # FNumber
    34855,  # ISOSpeedRatings
    37386,  # FocalLength
    42036,  # LensModel
)
_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
# Names that edits and copies get: "x-edited", "x copy", "Kopie von x", "x (1)", "x-1", "x~2".
_EDITED = re.compile(
    r"(edited|bearbeitet|modifi|retouch|copy|kopie|copie|copia|\(\d+\)$|[-_ ~]\d$)",
    re.IGNORECASE,
)
# The suggestion's weights: resolution first (a smaller copy lost pixels for good), then
# sharpness, then what an edit or a re-encode loses (EXIF, the original name, bytes).
SHARPNESS_SAME = 0.9
WEIGHTS = {"pixels": 0.35, "sharpness": 0.2, "exif": 0.15, "original": 0.15, "bytes": 0.15}


@dataclass(frozen=True)
class Facts:
    """What decides which photo of a group to keep (and what the review view shows)."""

    photo_id: int
    path: str
    size: int  # bytes
    mtime_ns: int
    width: int | None
    height: int | None
    taken_at: float
    taken_from_exif: bool
    camera: str | None
    fingerprint: str
    sharpness: float | None  # variance of the Laplacian over the image's variance
    exif_fields: int  # of the fields above, how many the file has
    edited: bool  # its name says it is an edit or a copy

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)


def looks_edited(path: str) -> bool:
    """Whether a file's name is that of an edit or a copy ("IMG_1 (1).jpg", "x-edited")."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return _EDITED.search(stem) is not None


def sharpness(path: str) -> float | None:
    """How sharp a photo is: the variance of its Laplacian over the variance of its
    pixels (so a brightened copy is not sharper for its contrast), on a decode of
    SHARPNESS_SIDE pixels on the long side. None when it cannot be read."""
    try:
        image = load_rgb(path, SHARPNESS_SIDE)
    except ImageRejected:
        return None
    image = image.convert("L")
    image.thumbnail((SHARPNESS_SIDE, SHARPNESS_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.shape[0] < 3 or pixels.shape[1] < 3:
        return None
    laplacian = (
        pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
    ) - 4 * pixels[1:-1, 1:-1]
    spread = float(pixels.var())
    return float(laplacian.var()) / spread if spread > 0 else 0.0


def exif_fields(path: str) -> int:
    """How many of the camera's usual EXIF fields the file has (0 when unreadable)."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            count = sum(1 for tag in _EXIF_FIELDS if exif.get(tag))
            inner = exif.get_ifd(_EXIF_IFD)
            count += sum(1 for tag in _EXIF_IFD_FIELDS if inner.get(tag))
            count += 1 if exif.get_ifd(_GPS_IFD) else 0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0
    return count


def scores(group: list[Facts]) -> dict[int, float]:
    """Each photo's merit as the one to keep, 0..1, each fact measured against the
    group's best for it."""

    def share(value: float, best: float) -> float:
        return value / best if best > 0 else 1.0

    top_pixels = max(f.pixels for f in group)
    top_bytes = max(f.size for f in group)
    top_sharp = max(f.sharpness or 0.0 for f in group)
    top_exif = max(f.exif_fields for f in group)
    merit = {}
    for f in group:
        sharp = f.sharpness or 0.0
        parts = {
            "pixels": share(f.pixels, top_pixels),
            # a re-encode's block edges move the measure by a few percent: closer than
            # SHARPNESS_SAME to the sharpest is as sharp (bytes and names decide then)
            "sharpness": 1.0 if sharp >= SHARPNESS_SAME * top_sharp else share(sharp, top_sharp),
            "exif": share(f.exif_fields, top_exif),
            "original": 0.0 if f.edited else 1.0,
            "bytes": share(f.size, top_bytes),
        }
        merit[f.photo_id] = round(sum(WEIGHTS[k] * v for k, v in parts.items()), 4)
    return merit


def ranked(group: list[Facts]) -> list[tuple[Facts, float]]:
    """The group best first, with scores (ties: the older file, then the shorter path)."""
    merit = scores(group)
    return sorted(
        ((f, merit[f.photo_id]) for f in group),
        key=lambda pair: (-pair[1], pair[0].mtime_ns, len(pair[0].path), pair[0].path),
    )


def tie_rule(kept: Facts, others: list[Facts]) -> str:
    """Which of :func:`ranked`'s tie-breaks picked ``kept`` over ``others``, in words."""
    if others and all(kept.mtime_ns < o.mtime_ns for o in others):
        return "the oldest file"
    if others and all((kept.mtime_ns, len(kept.path)) < (o.mtime_ns, len(o.path)) for o in others):
        return "the oldest file, then the shortest path"
    return "the oldest file, then the shortest path, then the first by name"


def reasons(kept: Facts, others: list[Facts], tied: bool) -> list[str]:
    """Why ``kept`` is suggested over ``others``, in words (the facts where it leads);
    ``tied``: its score is no higher than another's."""
    name = os.path.basename(kept.path)
    if others and all(o.fingerprint == kept.fingerprint for o in others):
        # exact copies: the same pixels, EXIF and bytes; only the name and the place differ
        renamed = [o for o in others if os.path.basename(o.path) != name]
        if not kept.edited and any(o.edited for o in renamed):
            return ["same content; kept the original name (the others look like copies)"]
        return [f"same content; kept {tie_rule(kept, others)}"]
    said = []
    if others and all(kept.pixels > o.pixels for o in others):
        said.append(f"most pixels ({kept.width}x{kept.height})")
    if others and all(SHARPNESS_SAME * (kept.sharpness or 0) > (o.sharpness or 0) for o in others):
        said.append("sharpest")
    if others and all(kept.exif_fields > o.exif_fields for o in others):
        said.append("most complete EXIF")
    # only where the names differ: a copy of the same name is no edit by its name
    renamed = [o for o in others if o.edited and os.path.basename(o.path) != name]
    if not kept.edited and renamed:
        said.append(
            "original name (the others look like edits or copies)"
            if len(renamed) == len(others)
            else f"original name ({len(renamed)} of the {len(others)} others look like "
            "edits or copies)"
        )
    if others and all(kept.size > o.size for o in others):
        said.append("largest file")
    if not said:
        said.append(
            f"as good as the others; {tie_rule(kept, others)}"
            if tied
            else "best on the facts together"
        )
    return said
