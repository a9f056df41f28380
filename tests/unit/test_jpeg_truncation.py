"""JPEGs whose data ends before the image they announce are refused, not filled with grey."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from clipdesk.imaging import ImageRejected, load_rgb
from tests.helpers import fixture_photo_paths


def _with_header_claiming(source: bytes, width: int, height: int, padding: int) -> bytes:
    """``source`` with its frame header saying width x height, and comment segments in
    front: a file large enough for the size it claims, holding a small photo's data."""
    out = bytearray(source[:2])
    for _ in range(padding):
        out += b"\xff\xfe" + struct.pack(">H", 65535) + b"x" * 65533
    i = 2
    while True:
        marker, length = source[i + 1], struct.unpack(">H", source[i + 2 : i + 4])[0]
        segment = bytearray(source[i : i + 2 + length])
        if marker in (0xC0, 0xC1, 0xC2):
            segment[5:9] = struct.pack(">HH", height, width)
        out += segment
        i += 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return bytes(out + source[i:])


def test_a_padded_header_claiming_240_megapixels_is_refused(tmp_path: Path) -> None:
    crafted = tmp_path / "claims-15000x16000.jpg"
    crafted.write_bytes(
        _with_header_claiming(fixture_photo_paths()[0].read_bytes(), 15000, 16000, 8)
    )
    with pytest.raises(
        ImageRejected, match="truncated image: the file ends before the 15000x16000"
    ):
        load_rgb(str(crafted), 224)


def test_a_cut_off_jpeg_is_refused_and_a_whole_one_loads(tmp_path: Path) -> None:
    data = fixture_photo_paths()[3].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ImageRejected, match="truncated image"):
        load_rgb(str(cut), 224)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data)
    assert min(load_rgb(str(whole), 224).size) >= 224
