"""The model manager's catalog, manifest and imports (no network involved)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import TINY_CONFIG, tiny_state_dict

if TYPE_CHECKING:
    import torch

    from clipdesk.models.store import ModelStore

REQUIRED = {
    ("ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B-32", "openai"),
    ("ViT-B-16", None),
    ("MobileCLIP-S1", None),
    ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
}


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """A random tiny-clip state dict, built by open_clip under a name of our own."""
    return tiny_state_dict("clipdesk-test-tiny-import", seed=7)


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    from clipdesk.models.store import ModelStore

    return ModelStore(tmp_path / "models")


def test_catalog_matches_open_clips_own_metadata() -> None:
    import open_clip

    from clipdesk.models.catalog import CATALOG, DEFAULT_NAME, catalog_entry
    from clipdesk.spec import DEFAULT_MODEL

    for arch, tag in REQUIRED:
        assert any(e.arch == arch and tag in (None, e.pretrained) for e in CATALOG), (arch, tag)
    assert catalog_entry(DEFAULT_NAME) == catalog_entry(DEFAULT_MODEL)
    assert len({e.name for e in CATALOG}) == len(CATALOG)
    for entry in CATALOG:
        cfg = open_clip.get_pretrained_cfg(entry.arch, entry.pretrained)
        assert cfg, entry.spec
        assert cfg["hf_hub"].rstrip("/") == entry.hf_repo, entry.name
        assert open_clip.get_model_config(entry.arch)["embed_dim"] == entry.dim, entry.name
        assert entry.imagenet_top1 is None or 0.5 < entry.imagenet_top1 < 0.9
        assert entry.size_bytes > 100_000_000 and entry.license
        assert entry.languages
    multilingual = [e for e in CATALOG if "multilingual" in e.languages]
    assert multilingual


def test_pretrained_overrides_follow_the_tag() -> None:
    from clipdesk.models.loading import pretrained_overrides

    openai = pretrained_overrides("ViT-B-32", "openai")
    assert openai["force_quick_gelu"] is True
    mobile: Any = pretrained_overrides("MobileCLIP-S1", "datacompdr")  # its config: JSON
    assert mobile["force_quick_gelu"] is False
    assert tuple(mobile["force_preprocess_cfg"]["mean"]) == (0.0, 0.0, 0.0)


def test_an_empty_store_lists_the_catalog_as_not_installed(store: ModelStore) -> None:
    from clipdesk.models.catalog import CATALOG
    from clipdesk.models.store import ModelStore

    assert isinstance(store, ModelStore)
    infos = store.available()
    assert [i.name for i in infos] == [e.name for e in CATALOG]
    assert not any(i.installed for i in infos)
    assert sum(i.default for i in infos) == 1
    assert store.spec_for("vit-b-32") is None
    assert store.spec_for("ViT-B-32:laion2b_s34b_b79k") is None
    assert store.spec_for("no-such-model") is None


def test_unknown_catalog_name_is_a_clear_error(store: ModelStore) -> None:
    from clipdesk.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match=r"unknown model 'nope'.*clipdesk models list"):
        store.download("nope")


def test_import_safetensors_copies_validates_and_keys_like_a_file_spec(
    tmp_path: Path, store: ModelStore, tiny_state: dict[str, torch.Tensor]
) -> None:
    from safetensors.torch import save_file

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.models.store import ModelStore
    from clipdesk.spec import ModelSpec

    assert isinstance(store, ModelStore)
    original = tmp_path / "mine" / "tiny.safetensors"
    original.parent.mkdir()
    save_file(tiny_state, str(original))
    before = (original.read_bytes(), original.stat().st_mtime_ns)

    spec = store.import_model("my-tiny", original, TINY_CONFIG)

    assert (original.read_bytes(), original.stat().st_mtime_ns) == before  # only read
    copy = Path(spec.pretrained)
    assert copy != original and copy.is_relative_to(tmp_path / "models")
    assert copy.read_bytes() == before[0]
    assert spec.arch == "tiny-clip"  # the config's file stem
    # The key a library would compute for the same file and config, computed independently.
    assert spec.key == ModelSpec.parse(f"tiny-clip:{original}", TINY_CONFIG).key
    digest = hashlib.sha256(before[0]).hexdigest()[:16]
    assert spec.key.endswith(f":file-{digest}")

    info = next(i for i in store.available() if i.name == "my-tiny")
    assert info.installed and info.kind == "imported" and info.dim == 64
    assert store.spec_for("my-tiny") == spec

    encoder = ClipEncoder(spec, "cpu")
    assert encoder.encode_texts(["a hat"]).shape == (1, 64)

    # A store opened afresh reads the key from the manifest: no re-hashing at start-up.
    again = ModelStore(tmp_path / "models").spec_for("my-tiny")
    assert again is not None and again.known_key == spec.key


def test_import_a_torch_state_dict(
    tmp_path: Path, store: ModelStore, tiny_state: dict[str, torch.Tensor]
) -> None:
    import torch

    weights = tmp_path / "tiny.pt"
    torch.save(tiny_state, weights)
    spec = store.import_model("tiny-pt", weights, TINY_CONFIG, arch="tiny-arch")
    assert spec.arch == "tiny-arch"
    assert Path(spec.pretrained).suffix == ".pt"
    assert store.spec_for("tiny-pt") == spec


class Custom:
    """Any class: a pickle referring to it needs code to load."""


def test_a_pickle_that_needs_code_is_refused(
    tmp_path: Path, store: ModelStore, tiny_state: dict[str, torch.Tensor]
) -> None:
    import torch

    from clipdesk.errors import ModelUnavailableError

    weights = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_state, "extra": Custom()}, weights)
    with pytest.raises(ModelUnavailableError) as caught:
        store.import_model("evil", weights, TINY_CONFIG)
    message = str(caught.value)
    assert message.startswith(f"refused: {weights} is a pickle that needs code to load")
    assert "Custom" in message
    assert store.spec_for("evil") is None
    assert not any(p.is_file() for p in (tmp_path / "models" / "imported").rglob("*"))
    assert weights.exists()  # the user's file is left alone


def test_weights_that_do_not_fit_the_architecture_are_refused(
    tmp_path: Path, store: ModelStore, tiny_state: dict[str, torch.Tensor]
) -> None:
    import json

    from safetensors.torch import save_file

    from clipdesk.errors import ModelUnavailableError

    config = json.loads(TINY_CONFIG.read_text())
    config["embed_dim"] = 32
    other = tmp_path / "other-tiny.json"
    other.write_text(json.dumps(config))
    weights = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(weights))
    with pytest.raises(ModelUnavailableError, match="does not fit the architecture other-tiny"):
        store.import_model("misfit", weights, other)
    assert store.spec_for("misfit") is None


def test_import_argument_errors(tmp_path: Path, store: ModelStore) -> None:
    from clipdesk.errors import ModelUnavailableError

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really")
    with pytest.raises(ModelUnavailableError, match="model name"):
        store.import_model("bad/name", weights, TINY_CONFIG)
    # A catalog name takes only that model's own weights (the offline import), not a config.
    with pytest.raises(ModelUnavailableError, match="--arch ViT-B-32, or choose another name"):
        store.import_model("vit-b-32", weights, TINY_CONFIG)
    with pytest.raises(ModelUnavailableError, match="weights file not found"):
        store.import_model("x", tmp_path / "missing.safetensors", TINY_CONFIG)
    with pytest.raises(ModelUnavailableError, match="--arch ARCH"):
        store.import_model("x", weights)
    with pytest.raises(ModelUnavailableError, match="not a valid safetensors file"):
        store.import_model("x", weights, TINY_CONFIG)
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(ModelUnavailableError, match="not a weights file"):
        store.import_model("x", tmp_path / "w.txt", TINY_CONFIG)


def test_a_removed_file_is_no_longer_installed(
    tmp_path: Path, store: ModelStore, tiny_state: dict[str, torch.Tensor]
) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(weights))
    spec = store.import_model("gone", weights, TINY_CONFIG)
    Path(spec.pretrained).unlink()
    assert store.spec_for("gone") is None
    info = next(i for i in store.available() if i.name == "gone")
    assert not info.installed


def test_a_damaged_manifest_is_a_clear_error(tmp_path: Path, store: ModelStore) -> None:
    from clipdesk.errors import ModelUnavailableError

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelUnavailableError, match=r"manifest.*cannot be read"):
        store.available()
