"""JPEG decoding where a CUDA encoder runs: nvJPEG through torchvision, with the model's
resize, crop and normalisation done there too.

A 12 MP photo costs tens of core-ms to decode and resize on the CPU, so even 16 cores
feed a few hundred photos/s to a GPU that encodes thousands (``bench/bench_gpu.py``
measures both ceilings). With this decoder the pipeline's threads only read bytes and
headers; each batch is decoded on the GPU. Whatever nvJPEG does not take (another
format, CMYK, a decode error) goes the CPU way, which also words the reason a person
reads for a broken file.

The pixels differ slightly from the CPU path's: a whole decode and torch's antialiased
bicubic resize (PIL's filter) instead of libjpeg's DCT scaling and PIL's resize.
``tests/unit/test_device_decode.py`` holds the embeddings to the CPU path's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipdesk.imaging import DEFAULT_MAX_PIXELS, PlainJpeg, read_plain_jpeg
from clipdesk.models.encoder import Encoder

if TYPE_CHECKING:
    import torch

# "0" keeps decoding on the CPU on a CUDA machine; "1" also decodes this way without CUDA
# (torchvision's CPU decoder: for tests of this code path).
DEVICE_DECODE_ENV = "CLIPDESK_GPU_DECODE"

# Photos decoded in one nvJPEG call: a 12 MP photo is 36 MB of pixels on the GPU.
_DECODE_CHUNK = 32

# Larger photos go the CPU way (DCT-scaled there): as float on the GPU a 250 MP panorama
# would take 3 GB, and CUDA's antialiased resize refuses very large scale factors.
DEVICE_MAX_PIXELS = 64_000_000

# The longest batch the pipeline builds when decoding on the device: its threads then hold
# whole JPEG files (~5 MB at 12 MP) rather than 0.6 MB tensors, so a GPU-memory-sized batch
# of 1024 would keep ~10 GB of files in RAM. 128 keeps it near 1 GB.
DEVICE_BATCH_CAP = 128

_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


@dataclass(frozen=True)
class ResizePlan:
    """open_clip's eval transform as numbers: shorter side to ``size`` (bicubic,
    antialiased), a centred ``size`` square, then (x / 255 - mean) / std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resize_plan(encoder: Encoder) -> ResizePlan | None:
    """The plan when the encoder's preprocessing is the usual one; None for any other
    (squash or longest-side resizes, other filters), which stays on the CPU."""
    steps = getattr(encoder, "_pil_steps", None)
    mean, std = getattr(encoder, "_mean", None), getattr(encoder, "_std", None)
    if not steps or mean is None or std is None:
        return None
    names = [type(step).__name__ for step in steps]
    if names[:2] != ["Resize", "CenterCrop"] or any("Convert" not in name for name in names[2:]):
        return None
    resize, crop = steps[0], steps[1]
    size = resize.size[0] if isinstance(resize.size, list | tuple) else resize.size
    if isinstance(resize.size, list | tuple) and len(resize.size) != 1:
        return None  # a fixed (h, w): a squash, not a shorter-side resize
    if str(getattr(resize, "interpolation", "")).lower().split(".")[-1] != "bicubic":
        return None
    if resize.max_size is not None or tuple(crop.size) != (size, size):
        return None
    return ResizePlan(
        int(size),
        tuple(float(v) for v in mean.reshape(-1)),  # type: ignore[arg-type]
        tuple(float(v) for v in std.reshape(-1)),  # type: ignore[arg-type]
    )


def wanted(encoder: Encoder) -> bool:
    """Decode on the encoder's device: on CUDA unless $CLIPDESK_GPU_DECODE is 0, or
    anywhere when it is 1; only for an encoder that takes torch tensors."""
    setting = os.environ.get(DEVICE_DECODE_ENV, "").strip()
    if setting == "0":
        return False
    device = getattr(encoder, "device", "cpu")
    if setting != "1" and device != "cuda":
        return False
    if not getattr(encoder, "takes_tensors", False) or resize_plan(encoder) is None:
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401  # lazy: torch, seconds to import
    except ImportError:
        return False
    return True


class DeviceDecoder:
    """Decodes plain JPEGs on ``device`` and preprocesses them there, in batches."""

    def __init__(self, plan: ResizePlan, device: str) -> None:
        import torch  # lazy: torch takes seconds to import

        # torchvision 0.29 points to TorchCodec for decoding; nvJPEG here is the same. Set
        # once: catch_warnings() per call would race with the decode threads' warnings.
        warnings.filterwarnings("ignore", _DEPRECATION, DeprecationWarning)
        self.plan = plan
        self.device = device
        self._mean = torch.tensor(plan.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(plan.std, device=device).view(1, 3, 1, 1)

    @classmethod
    def for_encoder(cls, encoder: Encoder) -> DeviceDecoder | None:
        plan = resize_plan(encoder)
        if plan is None or not wanted(encoder):
            return None
        # nvJPEG on CUDA; elsewhere (forced by the setting) torchvision's CPU decoder
        return cls(plan, "cuda" if getattr(encoder, "device", "cpu") == "cuda" else "cpu")

    @staticmethod
    def read(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> PlainJpeg | None:
        """In a decode thread: the file's bytes when nvJPEG should decode it. A file
        without its end-of-image marker (cut off in a copy) goes the CPU way, which
        refuses it: nvJPEG may decode such a file without an error."""
        jpeg = read_plain_jpeg(path, max_pixels)
        if jpeg is None or jpeg.width * jpeg.height > DEVICE_MAX_PIXELS:
            return None
        if not jpeg.data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return None
        return jpeg

    def prepare(self, jpegs: Sequence[PlainJpeg]) -> list[torch.Tensor | None]:
        """One (1, 3, size, size) float32 tensor on the device per JPEG, or None where
        this decoder failed (the caller decodes that one on the CPU)."""
        out: list[torch.Tensor | None] = []
        for start in range(0, len(jpegs), _DECODE_CHUNK):
            chunk = jpegs[start : start + _DECODE_CHUNK]
            images = self._decode(chunk)
            for jpeg, image in zip(chunk, images, strict=True):
                try:
                    out.append(None if image is None else self._preprocess(image, jpeg.orientation))
                except Exception:  # out of GPU memory, a resize CUDA refuses: the CPU way
                    out.append(None)
        return out

    def _decode(self, jpegs: Sequence[PlainJpeg]) -> list[torch.Tensor | None]:
        import torch  # lazy: torch takes seconds to import
        from torchvision.io import ImageReadMode, decode_jpeg  # lazy: torch, as above

        datas = [torch.frombuffer(bytearray(j.data), dtype=torch.uint8) for j in jpegs]
        if self.device == "cuda":
            # torchvision decodes on its own stream without waiting for ours: memory that
            # queued kernels still read could be handed to it (pytorch/vision#9606)
            torch.cuda.current_stream().synchronize()
        try:
            batch = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
            return list(batch)
        except Exception:
            pass  # one bad photo fails the whole call: find it, one by one
        images: list[torch.Tensor | None] = []
        for data in datas:
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
            except Exception:
                images.append(None)
        return images

    def _preprocess(self, image: torch.Tensor, orientation: int) -> torch.Tensor:
        """As open_clip's transform does it to a PIL image: upright, shorter side to
        ``size`` with PIL's antialiased bicubic (torch's antialias path uses PIL's
        a = -0.5), rounded to 8 bits as PIL stores it, centre crop, normalise."""
        import torch.nn.functional as F  # lazy: torch takes seconds to import

        image = _upright(image, orientation)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        size = self.plan.size
        # torchvision's Resize(int) arithmetic: the longer side truncated
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        pixels = image[None].float()
        # PIL resizes across, stores 8 bits, then down: bicubic overshoots at sharp edges
        # and that clamp in between shows (up to 7 levels apart in one pass; the trained
        # test model's rankings then moved for 16 % of its photos)
        for shape in ((height, new_w), (new_h, new_w)):
            if shape != tuple(pixels.shape[-2:]):
                pixels = F.interpolate(
                    pixels, size=shape, mode="bicubic", antialias=True, align_corners=False
                )
                pixels = pixels.round_().clamp_(0, 255)
        top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
        crop = pixels[:, :, top : top + size, left : left + size] / 255.0
        return (crop - self._mean) / self._std


def _upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """EXIF orientation 1-8 on a CxHxW tensor, as ImageOps.exif_transpose does."""
    import torch  # lazy: torch takes seconds to import

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.flip(-2, -1).transpose(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image
