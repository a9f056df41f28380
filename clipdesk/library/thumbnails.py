"""Thumbnails cached on disk in the library (never beside the photos).

One size is cached per photo content (fingerprint): large enough for the biggest grid
zoom on a high-DPI screen, small enough to load in a millisecond. A renamed or copied
photo shares its thumbnail, as it shares its vector.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from clipdesk.files import atomic_write
from clipdesk.imaging import ImageRejected, load_rgb
from clipdesk.library import Library

THUMBNAIL_SIDE = 512  # longest side, in pixels
_QUALITY = 85


class ThumbnailCache:
    """``path_for`` names the cached file; ``make`` decodes the photo and writes it."""

    def __init__(self, library: Library, side: int = THUMBNAIL_SIDE) -> None:
        self.folder = library.cache_dir / f"thumbs-{side}"
        self.side = side

    def path_for(self, fingerprint: str) -> Path:
        safe = "".join(c for c in fingerprint if c.isalnum()) or "unnamed"
        return self.folder / safe[:2] / f"{safe}.jpg"

    def cached(self, fingerprint: str) -> Path | None:
        path = self.path_for(fingerprint)
        return path if path.is_file() else None

    def make(self, photo_path: str, fingerprint: str) -> Path:
        """The cached thumbnail, made first if needed. Raises ImageRejected (with a
        reason) when the photo cannot be read; the photo itself is only read."""
        target = self.path_for(fingerprint)
        if target.is_file():
            return target
        # Draft decoding at half the thumbnail side keeps a 12 MP JPEG under ~30 ms.
        img = load_rgb(photo_path, self.side // 2)
        img.thumbnail((self.side, self.side), Image.Resampling.LANCZOS, reducing_gap=2.0)
        encoded = io.BytesIO()
        try:
            img.save(encoded, "JPEG", quality=_QUALITY)
            # two makers of one thumbnail: either file is whole; a cache, so no fsync
            atomic_write(target, encoded.getvalue(), sync=False)
        except OSError as exc:
            raise ImageRejected(f"cannot write the thumbnail cache: {exc}") from exc
        return target
