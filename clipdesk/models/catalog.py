"""The catalog: the pretrained CLIP models clipdesk offers, where open_clip publishes each,
under which license, and what it offers (size, quality, measured speed, languages), and the
written rule that picks the default among them. Plain data, cheap to import."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SAFETENSORS_NAME = "open_clip_model.safetensors"  # open_clip's preferred file name ...
TORCH_NAME = "open_clip_pytorch_model.bin"  # ... and its fallback, as open_clip tries them

# Written by `bench/bench_catalog.py --write`: each model's image tower measured on one CPU.
SPEEDS_FILE = Path(__file__).with_name("data") / "catalog_speeds.json"
# The default rule (README, "Choosing a model"): a candidate must index at least this share
# of the reference model's measured CPU speed (photos/s, same run, same backend).
DEFAULT_MIN_SPEED_SHARE = 0.7
REFERENCE_NAME = "vit-b-32"  # the model the speed share is measured against

# The pip extra that installs what the multilingual text towers need (their tokenizers).
MULTILINGUAL_EXTRA = "multilingual"

APPLE_AMLR = "Apple Machine Learning Research Model License"
APPLE_AMLR_URL = "https://github.com/apple/ml-mobileclip/blob/main/LICENSE_weights_data"


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
    languages: str
    description: str
    # None: what bench/bench_catalog.py measured (see relative_speed()); a figure here
    # overrides it (tests' fake entries).
    relative_speed: float | None = None
    image_size: int = 224
    # Published zero-shot retrieval: MSCOCO 5k text-to-image recall@1 (open_clip's
    # docs/openclip_retrieval_results.csv, "MSCOCO image retr. R@1"), None where unpublished.
    coco_text_to_image_r1: float | None = None
    license: str = ""  # SPDX id, or the license's name
    license_url: str = ""
    # Weights under a license for research only: downloaded only after the person
    # acknowledges it, never the default, never bundled.
    research_only: bool = False
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

    @property
    def license_text(self) -> str:
        """The license as a person reads it: its name, and "research only" where it is."""
        return self.license + (" (research only)" if self.research_only else "")


def _hf_files(repo: str, *names: str) -> tuple[tuple[str, str], ...]:
    return tuple((repo, name) for name in names)


# Facts from open_clip. Checked against the installed open_clip by
# tests/unit/test_catalog.py: hf repos (open_clip.get_pretrained_cfg), embed dims and image
# sizes (open_clip.get_model_config). Published figures, checked against rows of open_clip's
# docs/openclip_results.csv (ImageNet-1k zero-shot top-1) and
# docs/openclip_retrieval_results.csv (MSCOCO text-to-image R@1): MobileCLIP-S1, SigLIP 2,
# PE-Core and MobileCLIP2 have no row there, so None (MobileCLIP-S1's 72.6 % is the
# MobileCLIP paper's, Vasu et al., CVPR 2024, table 1). Sizes: the parameter count x 4
# bytes (fp32 checkpoints; bench/bench_catalog.py prints the count), rounded. Licenses: each
# repo's model card (Apple's weights: the license file of apple/ml-mobileclip).
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="vit-b-32",
        arch="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        size_bytes=605_000_000,
        dim=512,
        imagenet_top1=0.6656,
        coco_text_to_image_r1=0.3934,
        languages="English",
        description="default: good balance of speed and quality (LAION-2B)",
        license="MIT",
        license_url="https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ),
    CatalogEntry(
        name="vit-b-32-openai",
        arch="ViT-B-32",
        pretrained="openai",
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        size_bytes=605_000_000,
        dim=512,
        imagenet_top1=0.6332,
        coco_text_to_image_r1=0.3044,
        languages="English",
        description="OpenAI's original CLIP ViT-B/32",
        license="MIT",
        license_url="https://github.com/openai/CLIP/blob/main/LICENSE",
    ),
    CatalogEntry(
        name="vit-b-16",
        arch="ViT-B-16",
        pretrained="datacomp_xl_s13b_b90k",
        hf_repo="laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K",
        size_bytes=599_000_000,
        dim=512,
        imagenet_top1=0.7349,
        coco_text_to_image_r1=0.4016,
        languages="English",
        description="more accurate, several times slower to index (DataComp-XL)",
        license="MIT",
        license_url="https://huggingface.co/laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K",
    ),
    CatalogEntry(
        name="mobileclip-s1",
        arch="MobileCLIP-S1",
        pretrained="datacompdr",
        hf_repo="apple/MobileCLIP-S1-OpenCLIP",
        size_bytes=340_000_000,
        dim=512,
        imagenet_top1=0.726,
        image_size=256,
        languages="English",
        description="small and fast (Apple MobileCLIP); weights for research only",
        license=APPLE_AMLR,
        license_url=APPLE_AMLR_URL,
        research_only=True,
    ),
    CatalogEntry(
        name="multilingual-b-32",
        arch="xlm-roberta-base-ViT-B-32",
        pretrained="laion5b_s13b_b90k",
        hf_repo="laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        size_bytes=1_465_000_000,
        dim=512,
        imagenet_top1=0.6236,
        coco_text_to_image_r1=0.3778,
        languages="multilingual (about 100 languages, XLM-RoBERTa)",
        description="search in languages other than English",
        license="MIT",
        license_url="https://huggingface.co/laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        requires=("transformers",),
        extra_files=_hf_files(
            "xlm-roberta-base", "config.json", "tokenizer.json", "tokenizer_config.json"
        ),
    ),
    CatalogEntry(
        name="siglip2-b-16",
        arch="ViT-B-16-SigLIP2",
        pretrained="webli",
        hf_repo="timm/ViT-B-16-SigLIP2",
        size_bytes=1_501_000_000,
        dim=768,
        imagenet_top1=None,
        languages="multilingual (SigLIP 2, Gemma tokenizer)",
        description="Google SigLIP 2 B/16 at 224 px: multilingual search",
        license="Apache-2.0",
        license_url="https://huggingface.co/timm/ViT-B-16-SigLIP2",
        requires=("transformers",),
        extra_files=_hf_files(
            "timm/ViT-B-16-SigLIP2",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ),
    ),
    CatalogEntry(
        name="siglip2-b-32",
        arch="ViT-B-32-SigLIP2-256",
        pretrained="webli",
        hf_repo="timm/ViT-B-32-SigLIP2-256",
        size_bytes=1_507_000_000,
        dim=768,
        imagenet_top1=None,
        image_size=256,
        languages="multilingual (SigLIP 2, Gemma tokenizer)",
        description="Google SigLIP 2 B/32 at 256 px: multilingual search, faster than B/16",
        license="Apache-2.0",
        license_url="https://huggingface.co/timm/ViT-B-32-SigLIP2-256",
        requires=("transformers",),
        extra_files=_hf_files(
            "timm/ViT-B-32-SigLIP2-256",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ),
    ),
    CatalogEntry(
        name="pe-core-s-16",
        arch="PE-Core-S-16-384",
        pretrained="meta",
        hf_repo="timm/PE-Core-S-16-384",
        size_bytes=349_000_000,
        dim=512,
        imagenet_top1=None,
        image_size=384,
        languages="English",
        description="Meta Perception Encoder, small, 384 px",
        license="Apache-2.0",
        license_url="https://huggingface.co/facebook/PE-Core-S16-384",
    ),
    CatalogEntry(
        name="pe-core-t-16",
        arch="PE-Core-T-16-384",
        pretrained="meta",
        hf_repo="timm/PE-Core-T-16-384",
        size_bytes=278_000_000,
        dim=512,
        imagenet_top1=None,
        image_size=384,
        languages="English",
        description="Meta Perception Encoder, tiny, 384 px",
        license="Apache-2.0",
        license_url="https://huggingface.co/facebook/PE-Core-T16-384",
    ),
    CatalogEntry(
        name="mobileclip2-s0",
        arch="MobileCLIP2-S0",
        pretrained="dfndr2b",
        hf_repo="timm/MobileCLIP2-S0-OpenCLIP",
        size_bytes=299_000_000,
        dim=512,
        imagenet_top1=None,
        image_size=256,
        languages="English",
        description="Apple MobileCLIP2 S0: small and fast; weights for research only",
        license=APPLE_AMLR,
        license_url=APPLE_AMLR_URL,
        research_only=True,
    ),
    CatalogEntry(
        name="mobileclip2-s2",
        arch="MobileCLIP2-S2",
        pretrained="dfndr2b",
        hf_repo="timm/MobileCLIP2-S2-OpenCLIP",
        size_bytes=397_000_000,
        dim=512,
        imagenet_top1=None,
        image_size=256,
        languages="English",
        description="Apple MobileCLIP2 S2; weights for research only",
        license=APPLE_AMLR,
        license_url=APPLE_AMLR_URL,
        research_only=True,
    ),
)
DEFAULT_NAME = "vit-b-32"


def catalog_entry(name_or_spec: str) -> CatalogEntry | None:
    """The catalog model called ``name_or_spec``, by name or by its ``ARCH:TAG`` spec."""
    for entry in CATALOG:
        if name_or_spec in (entry.name, entry.spec):
            return entry
    return None


def license_notice(entry: CatalogEntry) -> str:
    """What a person must acknowledge before ``entry``'s weights are downloaded."""
    return (
        f"{entry.name}'s weights are under the {entry.license} ({entry.license_url}), which "
        "allows research use only, not use in a product or for commercial purposes"
    )


def measured_speeds(path: Path = SPEEDS_FILE) -> dict[str, dict[str, float]]:
    """The figures bench/bench_catalog.py measured, per catalog name (none without the
    file): ``images_per_s`` (image tower, torch fp32 on the CPU), ``text_ms``, ..."""
    models = _read_speeds(str(path)).get("models")
    if not isinstance(models, dict):
        return {}
    return {
        str(name): {str(k): float(v) for k, v in figures.items() if isinstance(v, int | float)}
        for name, figures in models.items()
        if isinstance(figures, dict)
    }


def speeds_cpu(path: Path = SPEEDS_FILE) -> str | None:
    """The CPU the figures in ``path`` were measured on."""
    cpu = _read_speeds(str(path)).get("cpu")
    return cpu if isinstance(cpu, str) else None


@lru_cache(maxsize=4)
def _read_speeds(path: str) -> dict[str, object]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def relative_speed(
    entry: CatalogEntry, speeds: Mapping[str, Mapping[str, float]] | None = None
) -> float | None:
    """``entry``'s measured indexing speed (image tower, photos/s) as a multiple of the
    reference model's, on the same CPU in the same run (``x_reference``: bursts of both
    alternated in one process; else the ratio of their images/s); None where not measured."""
    if entry.relative_speed is not None:
        return entry.relative_speed
    speeds = measured_speeds() if speeds is None else speeds
    paired = speeds.get(entry.name, {}).get("x_reference")
    if paired:  # measured in alternation with the reference model, in one process
        return paired
    own = speeds.get(entry.name, {}).get("images_per_s")
    reference = speeds.get(REFERENCE_NAME, {}).get("images_per_s")
    if not own or not reference:
        return None
    return own / reference


def default_candidates(
    entries: Iterable[CatalogEntry], speeds: Mapping[str, Mapping[str, float]]
) -> list[CatalogEntry]:
    """The models the default rule may choose: a license that allows use in an end-user
    app (not research only), nothing to install beyond clipdesk itself, a published
    retrieval figure, and a measured CPU indexing speed of at least
    DEFAULT_MIN_SPEED_SHARE of the reference model's."""
    chosen = []
    for entry in entries:
        share = relative_speed(entry, speeds)
        if (
            not entry.research_only
            and not entry.requires
            and entry.coco_text_to_image_r1 is not None
            and share is not None
            and share >= DEFAULT_MIN_SPEED_SHARE
        ):
            chosen.append(entry)
    return chosen


def choose_default(
    entries: Iterable[CatalogEntry],
    speeds: Mapping[str, Mapping[str, float]],
    current: str,
) -> str:
    """The default rule: among default_candidates, the best published text-to-image
    retrieval (MSCOCO R@1); ``current`` stays unless a candidate is strictly better, and
    when nothing was measured."""
    entries = list(entries)
    candidates = default_candidates(entries, speeds)
    by_name = {entry.name: entry for entry in entries}
    incumbent = by_name.get(current)
    best = max(candidates, key=lambda e: e.coco_text_to_image_r1 or 0.0, default=None)
    if best is None or incumbent is None:
        return current
    if incumbent in candidates and (best.coco_text_to_image_r1 or 0.0) <= (
        incumbent.coco_text_to_image_r1 or 0.0
    ):
        return current
    return best.name
