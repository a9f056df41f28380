"""The catalog: the pretrained CLIP models clipdesk offers, where open_clip publishes each
and what it offers (size, quality, speed, languages). Plain data, cheap to import."""

from __future__ import annotations

from dataclasses import dataclass

SAFETENSORS_NAME = "open_clip_model.safetensors"  # open_clip's preferred file name ...
TORCH_NAME = "open_clip_pytorch_model.bin"  # ... and its fallback, as open_clip tries them


@dataclass(frozen=True)
class CatalogEntry:
    """A supported pretrained model: where open_clip publishes it and what it offers."""

    name: str
    arch: str
    pretrained: str
    hf_repo: str
    size_bytes: int  # approximate download size
    dim: int
    imagenet_top1: float | None
    relative_speed: float  # photos/s relative to the default model on the same machine
    languages: str
    description: str
    files: tuple[str, ...] = (SAFETENSORS_NAME, TORCH_NAME)
    revision: str = "main"
    sha256: str | None = None  # pinned checksum when known; otherwise the hub's ETag
    requires: tuple[str, ...] = ()  # Python packages open_clip needs for this model
    # Files open_clip/transformers fetch at first load (tokenizer, text config), which a
    # download puts in huggingface_hub's cache so the model then loads offline.
    extra_files: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.arch}:{self.pretrained}"


# Facts from open_clip: hf repos from open_clip.get_pretrained_cfg (pretrained.py), dims from
# model_configs/*.json (embed_dim), ImageNet-1k zero-shot top-1 from open_clip's
# docs/openclip_results.csv, except MobileCLIP-S1 (not in that table): 72.6% from the
# MobileCLIP paper (Vasu et al., CVPR 2024, table 1). Sizes: parameter count (same sources)
# times 4 bytes (fp32 checkpoints), rounded. Speeds are rough image-tower estimates from
# published FLOPs/latency; `bench/` measures the real figure on a given machine.
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="vit-b-32",
        arch="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        size_bytes=605_000_000,
        dim=512,
        imagenet_top1=0.6656,
        relative_speed=1.0,
        languages="English",
        description="default: good balance of speed and quality (LAION-2B)",
    ),
    CatalogEntry(
        name="vit-b-32-openai",
        arch="ViT-B-32",
        pretrained="openai",
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        size_bytes=605_000_000,
        dim=512,
        imagenet_top1=0.6332,
        relative_speed=1.0,
        languages="English",
        description="OpenAI's original CLIP ViT-B/32",
    ),
    CatalogEntry(
        name="vit-b-16",
        arch="ViT-B-16",
        pretrained="datacomp_xl_s13b_b90k",
        hf_repo="laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K",
        size_bytes=599_000_000,
        dim=512,
        imagenet_top1=0.7349,
        relative_speed=0.3,
        languages="English",
        description="more accurate, about 3x slower to index (DataComp-XL)",
    ),
    CatalogEntry(
        name="mobileclip-s1",
        arch="MobileCLIP-S1",
        pretrained="datacompdr",
        hf_repo="apple/MobileCLIP-S1-OpenCLIP",
        size_bytes=340_000_000,
        dim=512,
        imagenet_top1=0.726,
        relative_speed=1.2,
        languages="English",
        description="small and fast (Apple MobileCLIP), for laptops without a GPU",
    ),
    CatalogEntry(
        name="multilingual-b-32",
        arch="xlm-roberta-base-ViT-B-32",
        pretrained="laion5b_s13b_b90k",
        hf_repo="laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        size_bytes=1_465_000_000,
        dim=512,
        imagenet_top1=0.6236,
        relative_speed=1.0,
        languages="multilingual (about 100 languages, XLM-RoBERTa)",
        description="search in languages other than English",
        requires=("transformers",),
        extra_files=tuple(
            ("xlm-roberta-base", f)
            for f in ("config.json", "tokenizer.json", "tokenizer_config.json")
        ),
    ),
)
DEFAULT_NAME = "vit-b-32"


def catalog_entry(name_or_spec: str) -> CatalogEntry | None:
    """The catalog model called ``name_or_spec``, by name or by its ``ARCH:TAG`` spec."""
    for entry in CATALOG:
        if name_or_spec in (entry.name, entry.spec):
            return entry
    return None
