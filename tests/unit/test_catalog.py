"""The model catalog tells the truth: open_clip's own metadata, the published figures,
each model's license (research-only weights only after an acknowledgement), and the
written rule that picks the default."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from clipdesk.models.catalog import (
    CATALOG,
    DEFAULT_MIN_SPEED_SHARE,
    DEFAULT_NAME,
    REFERENCE_NAME,
    CatalogEntry,
    catalog_entry,
    choose_default,
    measured_speeds,
    relative_speed,
)
from tests.helpers import run_cli

# Rows of open_clip's docs/openclip_results.csv (commit 0a1cc150; name, pretrained and the
# "ImageNet 1k" column only) and docs/openclip_retrieval_results.csv (commit 05e7db49;
# name, pretrained, "params (M)" and "MSCOCO image retr. R@1"), as published. Neither
# file has a row for MobileCLIP-S1, SigLIP 2, PE-Core or MobileCLIP2, and the installed
# open_clip 3.3 ships no results at all.
OPENCLIP_IMAGENET = """name,pretrained,ImageNet 1k
ViT-B-32,laion2b_s34b_b79k,0.6656
ViT-B-32,openai,0.6332
ViT-B-16,datacomp_xl_s13b_b90k,0.7349
xlm-roberta-base-ViT-B-32,laion5b_s13b_b90k,0.6236
"""
OPENCLIP_RETRIEVAL = """name,pretrained,params (M),MSCOCO image retr. R@1
ViT-B-32,laion2b_s34b_b79k,151.28,0.3934
ViT-B-32,openai,151.28,0.3044
ViT-B-16,datacomp_xl_s13b_b90k,149.62,0.4016
xlm-roberta-base-ViT-B-32,laion5b_s13b_b90k,366.12,0.3778
"""


def _rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["name"], r["pretrained"]): r for r in csv.DictReader(io.StringIO(text))}


def test_the_newer_families_are_in_the_catalog() -> None:
    specs = {entry.spec for entry in CATALOG}
    for spec in (
        "ViT-B-16-SigLIP2:webli",
        "ViT-B-32-SigLIP2-256:webli",
        "PE-Core-S-16-384:meta",
        "PE-Core-T-16-384:meta",
        "MobileCLIP2-S0:dfndr2b",
        "MobileCLIP2-S2:dfndr2b",
    ):
        assert spec in specs, spec


def test_every_entry_agrees_with_the_installed_open_clip() -> None:
    import open_clip

    for entry in CATALOG:
        assert entry.pretrained in open_clip.list_pretrained_tags_by_model(entry.arch), entry.name
        cfg = open_clip.get_pretrained_cfg(entry.arch, entry.pretrained)
        assert cfg["hf_hub"].rstrip("/") == entry.hf_repo, entry.name
        model_cfg = open_clip.get_model_config(entry.arch)
        assert model_cfg["embed_dim"] == entry.dim, entry.name
        assert model_cfg["vision_cfg"]["image_size"] == entry.image_size, entry.name
        # A text tower open_clip builds or tokenizes through Hugging Face needs transformers.
        text_cfg = model_cfg["text_cfg"]
        needs_hf = "hf_model_name" in text_cfg or "hf_tokenizer_name" in text_cfg
        assert ("transformers" in entry.requires) == needs_hf, entry.name
        if "hf_tokenizer_name" in text_cfg:
            tokenizer_repos = {repo for repo, _ in entry.extra_files}
            assert text_cfg["hf_tokenizer_name"] in tokenizer_repos, entry.name


def test_published_figures_are_open_clips_own() -> None:
    imagenet, retrieval = _rows(OPENCLIP_IMAGENET), _rows(OPENCLIP_RETRIEVAL)
    for entry in CATALOG:
        key = (entry.arch, entry.pretrained)
        if key in retrieval:
            row = retrieval[key]
            assert entry.coco_text_to_image_r1 == float(row["MSCOCO image retr. R@1"])
            # the download: the parameters in fp32, within rounding
            assert entry.size_bytes == pytest.approx(float(row["params (M)"]) * 4e6, rel=0.01)
        else:
            assert entry.coco_text_to_image_r1 is None, f"{entry.name}: no published row"
        if key in imagenet:
            assert entry.imagenet_top1 == float(imagenet[key]["ImageNet 1k"]), entry.name
    assert {(e.arch, e.pretrained) for e in CATALOG} >= set(retrieval)


def test_every_entry_names_its_license_and_apples_weights_are_research_only() -> None:
    for entry in CATALOG:
        assert entry.license and entry.license_url.startswith("https://"), entry.name
        apple = entry.arch.startswith("MobileCLIP")
        assert entry.research_only == apple, entry.name
        if apple:
            assert "Apple Machine Learning Research Model" in entry.license
    default = catalog_entry(DEFAULT_NAME)
    assert default is not None and not default.research_only


def test_shipped_measurements_keep_the_default_by_the_written_rule() -> None:
    speeds = measured_speeds()
    assert choose_default(CATALOG, speeds, DEFAULT_NAME) == DEFAULT_NAME
    for name, figures in speeds.items():
        assert catalog_entry(name) is not None, name
        assert figures["images_per_s"] > 0 and figures["text_ms"] > 0


def _entry(name: str, r1: float | None, **extra: object) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        arch="ViT-B-32",
        pretrained="x",
        hf_repo="x/x",
        size_bytes=1,
        dim=512,
        imagenet_top1=None,
        languages="English",
        description="",
        coco_text_to_image_r1=r1,
        license="MIT",
        license_url="https://example.org",
        **extra,  # type: ignore[arg-type]
    )


def test_the_default_rule() -> None:
    ref = _entry(REFERENCE_NAME, 0.39)
    better = _entry("better", 0.45)
    slow_best = _entry("slow-best", 0.60)
    research = _entry("research", 0.70, research_only=True)
    extra = _entry("needs-extra", 0.65, requires=("transformers",))
    unpublished = _entry("unpublished", None)
    entries = [ref, better, slow_best, research, extra, unpublished]
    share = DEFAULT_MIN_SPEED_SHARE
    speeds = {
        REFERENCE_NAME: {"images_per_s": 10.0},
        "better": {"images_per_s": 10.0 * share},  # exactly at the bar: allowed
        "slow-best": {"images_per_s": 10.0 * share * 0.99},
        "research": {"images_per_s": 20.0},
        "needs-extra": {"images_per_s": 20.0},
        "unpublished": {"images_per_s": 30.0},
    }
    assert choose_default(entries, speeds, REFERENCE_NAME) == "better"
    # better is slower than the bar: nothing else qualifies, the current default stays
    speeds["better"] = {"images_per_s": 10.0 * share * 0.99}
    assert choose_default(entries, speeds, REFERENCE_NAME) == REFERENCE_NAME
    # nothing measured: the current default stays
    assert choose_default(entries, {}, REFERENCE_NAME) == REFERENCE_NAME
    # a worse published figure never replaces the default, however fast
    worse = _entry("worse", 0.30)
    speeds["worse"] = {"images_per_s": 50.0}
    assert choose_default([*entries, worse], speeds, REFERENCE_NAME) == REFERENCE_NAME
    assert relative_speed(slow_best, speeds) == pytest.approx(share * 0.99)
    # measured in alternation with the reference in one process: that ratio is the one used
    speeds["better"] = {"images_per_s": 1.0, "x_reference": share}
    assert relative_speed(better, speeds) == share
    assert choose_default(entries, speeds, REFERENCE_NAME) == "better"


def test_a_research_only_model_downloads_only_after_the_license_is_accepted(
    tmp_path: Path,
) -> None:
    from clipdesk.errors import ModelUnavailableError
    from clipdesk.models.store import LicenseNotAccepted, ModelStore

    # Port 9 (discard): nothing answers, so no download can happen either way.
    store = ModelStore(tmp_path / "models", endpoint="http://127.0.0.1:9")
    with pytest.raises(LicenseNotAccepted, match=r"Apple Machine Learning Research Model"):
        store.download("mobileclip2-s0")
    assert not (tmp_path / "models").exists()  # refused before anything was written
    # Accepted: it goes on to the hub (which does not answer here), past the license.
    with pytest.raises(ModelUnavailableError) as caught:
        store.download("mobileclip2-s0", accept_license=True)
    assert not isinstance(caught.value, LicenseNotAccepted)
    # A model under a license that allows use in an app needs no acknowledgement.
    with pytest.raises(ModelUnavailableError) as caught:
        store.download("pe-core-t-16")
    assert not isinstance(caught.value, LicenseNotAccepted)


def test_cli_lists_licenses_and_refuses_research_weights_without_the_flag(
    tmp_path: Path,
) -> None:
    env = {"CLIPDESK_MODELS_DIR": str(tmp_path / "models"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    library = tmp_path / "lib"
    listed = run_cli("models", "list", library=library, env=env).stdout
    speeds = measured_speeds()
    for entry in CATALOG:
        line = next(line for line in listed.splitlines() if f" {entry.name} " in line)
        assert ("Apple AMLR" if entry.research_only else entry.license) in line, line
        assert entry.license_url in listed
        share = relative_speed(entry, speeds)  # measured, from bench/bench_catalog.py
        assert (f" {share:.2f}x " if share is not None else "     - ") in line, line
    rows = json.loads(run_cli("models", "list", "--json", library=library, env=env).stdout)
    by_name = {row["name"]: row for row in rows}
    for entry in CATALOG:
        row = by_name[entry.name]
        assert (row["license"], row["license_url"]) == (entry.license, entry.license_url)
        assert row["research_only"] is entry.research_only
    refused = run_cli("models", "download", "mobileclip2-s2", library=library, env=env, check=False)
    assert refused.returncode != 0
    assert "Apple Machine Learning Research Model License" in refused.stderr
    assert "--accept-license" in refused.stderr
    assert not (tmp_path / "models" / "downloads" / "mobileclip2-s2").exists()


def test_the_bundle_build_refuses_research_only_weights(tmp_path: Path) -> None:
    import importlib.util

    from tests.helpers import ROOT

    spec = importlib.util.spec_from_file_location("clipdesk_build_", ROOT / "packaging/build.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    with pytest.raises(SystemExit, match=r"mobileclip2-s0 is not bundled.*research use only"):
        build.export_models(["MobileCLIP2-S0:dfndr2b"], tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []  # not even the test model was exported
