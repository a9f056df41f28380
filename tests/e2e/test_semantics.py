"""Does search mean something? The project's own small CLIP on real, held-out photos.

The model (tests/fixtures/clothing-clip.*) was trained by tools/train_tiny_clip.py on the
train split of clothing-small; these tests index the test split (tests/fixtures/
clothing-test) through the CLI and check precision, tagging accuracy, and that every
ranking equals a brute-force open_clip reference, which catches a preprocessing or
normalisation mismatch between indexing and querying.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    FIXTURES,
    OpenClipReference,
    recall_at_k,
    run_cli,
    run_cli_json,
    top_k,
)

MODEL_CONFIG = FIXTURES / "clothing-clip.json"
MODEL_WEIGHTS = FIXTURES / "clothing-clip.safetensors"
TEST_SPLIT = FIXTURES / "clothing-test"
CLASSES = sorted(p.name for p in TEST_SPLIT.iterdir() if p.is_dir())


def _label(path: str | Path) -> str:
    return Path(path).parent.name


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("semantic")
    photos = base / "clothing"
    shutil.copytree(TEST_SPLIT, photos, ignore=shutil.ignore_patterns("LICENSE"))
    library = base / "library"
    run_cli("add", str(photos), library=library)
    spec = f"clothing-clip:{MODEL_WEIGHTS}"
    out = run_cli("index", "--model", spec, "--model-config", str(MODEL_CONFIG), library=library)
    assert "372 of 372 photos indexed, 0 failed" in out.stdout, out.stdout
    return library, photos


@pytest.fixture(scope="module")
def reference() -> OpenClipReference:
    return OpenClipReference("clothing-clip", MODEL_CONFIG, weights=MODEL_WEIGHTS)


def test_text_search_finds_the_class(indexed: tuple[Path, Path]) -> None:
    library, _ = indexed
    hats = run_cli_json("search", "a photo of a hat", "-k", "5", library=library)
    hat_precision = sum(_label(h["path"]) == "hat" for h in hats) / 5
    precisions = {}
    for label in CLASSES:
        hits = run_cli_json("search", f"a photo of a {label}", "-k", "5", library=library)
        precisions[label] = sum(_label(h["path"]) == label for h in hits) / 5
    mean = sum(precisions.values()) / len(precisions)
    print(f"precision@5: hat {hat_precision:.2f}, mean {mean:.2f}, {precisions}")
    # The committed model reaches hat 1.0 and a mean of 0.88 (tests/fixtures/clothing-clip.md);
    # chance is about 0.1.
    assert hat_precision >= 0.6, hats
    assert mean >= 0.7, precisions


def test_similar_from_a_shoe_gives_shoes(indexed: tuple[Path, Path]) -> None:
    library, photos = indexed
    shoes = sorted((photos / "shoes").glob("*.jpg"))[:5]
    precisions = []
    for shoe in shoes:
        hits = run_cli_json("similar", str(shoe), "-k", "5", library=library)
        precisions.append(sum(_label(h["path"]) == "shoes" for h in hits) / 5)
    print(f"similar-from-shoe precision@5: {precisions}")
    assert sum(precisions) / len(precisions) >= 0.8, precisions


def test_rankings_equal_a_brute_force_open_clip_reference(
    indexed: tuple[Path, Path], reference: OpenClipReference
) -> None:
    library, photos = indexed
    paths = sorted(photos.rglob("*.jpg"))
    vectors = reference.embed_files(paths)
    recalls = []
    for label in CLASSES:
        query = f"a photo of a {label}"
        got = [str(h["path"]) for h in run_cli_json("search", query, "-k", "10", library=library)]
        expected = [str(paths[i]) for i in top_k(vectors, reference.embed_text(query), 10)]
        recalls.append(recall_at_k(got, expected))
    for i in range(0, 372, 37):
        got = [
            str(h["path"])
            for h in run_cli_json("similar", str(paths[i]), "-k", "10", library=library)
        ]
        expected = [str(paths[j]) for j in top_k(vectors, vectors[i], 10, exclude=i)]
        recalls.append(recall_at_k(got, expected))
    print(f"recall@10 vs open_clip brute force: {recalls}")
    assert float(np.mean(recalls)) >= 0.98, recalls


def _tag_accuracy(library: Path, prompts: str) -> float:
    proc = run_cli("tag", "--labels", "clothes", "--prompts", prompts, "--json", library=library)
    results = json.loads(proc.stdout)
    assert len(results) == 372
    correct = sum(1 for r in results if r["tags"] and r["tags"][0]["label"] == _label(r["path"]))
    return correct / len(results)


def test_tagging_accuracy_single_prompt_vs_ensemble(indexed: tuple[Path, Path]) -> None:
    library, _ = indexed
    run_cli("labels", "create", "clothes", *CLASSES, library=library)
    single = _tag_accuracy(library, "single")
    ensemble = _tag_accuracy(library, "ensemble")
    print(f"tagging top-1 accuracy: single prompt {single:.3f}, ensemble {ensemble:.3f}")
    # This model was trained on captions from many templates, so its prompt ensemble and
    # its single prompt score alike (clothing-clip.md): "not worse" within one photo.
    assert ensemble >= single - 1 / 372
    assert ensemble >= 0.7  # reached: 0.78 (chance 0.1)
    status = json.loads(run_cli("status", "--json", library=library).stdout)
    assert sum(status["tags"].values()) > 0
    # Filtering a search by tag returns only photos that carry the tag.
    hits = run_cli_json("search", "a photo", "--tag", "shoes", "-k", "20", library=library)
    assert hits and len(hits) <= status["tags"].get("shoes", 0)
