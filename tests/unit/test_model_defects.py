"""Models and exports under hostile or damaged input (issue 17): an export that names files
outside itself, a damaged export, a bad model config, imported models' names, and the
declared dependencies."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from clipdesk.cli.main import main
from clipdesk.models import export_files, exported
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from tests.helpers import run_cli

# -- an export that names files outside itself (item 1) ----------------------------------


def _fake_export(folder: Path, **overrides: object) -> dict[str, Any]:
    """A folder with the files and manifest of an export (not a runnable one: installing
    only reads and copies files); returns the manifest's fields, written as given."""
    folder.mkdir(parents=True)
    files = {}
    for name in (*export_files.EXPORT_FILES, "vocab.txt.gz"):
        (folder / name).write_bytes(f"contents of {name}".encode())
        files[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    manifest = export_files.ExportManifest(
        name="fake-model-0123abcd", key="fake:file-0123", arch="fake", pretrained="fake.pt",
        config_json=None, dim=4, image_size=8, context_length=5, logit_scale=100.0,
        mean=[0.5] * 3, std=[0.5] * 3, interpolation="bicubic", resize_mode="shortest",
        weights={"visual": "fp32", "text": "fp32"}, fidelity={}, files=files, vocab="vocab.txt.gz",
    )  # fmt: skip
    fields = {**asdict(manifest), **overrides}
    (folder / export_files.MANIFEST_NAME).write_text(json.dumps(fields), encoding="utf-8")
    return fields


def _rewrite(folder: Path, fields: dict[str, Any]) -> None:
    (folder / export_files.MANIFEST_NAME).write_text(json.dumps(fields), encoding="utf-8")


def _import_export(
    folder: Path, models: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(models))
    code = main(["--library", str(models.parent / "library"), "models", "import", "--export",
                 str(folder)])  # fmt: skip
    return code, capsys.readouterr().err


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def test_a_manifest_naming_a_file_outside_the_export_writes_nothing_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    models = home / "models"
    victim = home / "victim.txt"  # three folders above the models folder's work folder
    home.mkdir()
    victim.write_text("the user's own file")
    # The attacker's export, with the replacement three folders above it.
    export = tmp_path / "download" / "a" / "b" / "export"
    fields = _fake_export(export)
    (tmp_path / "download" / "victim.txt").write_text("written by the export")
    files = dict(fields["files"])
    files["../../../victim.txt"] = hashlib.sha256(b"written by the export").hexdigest()
    _rewrite(export, {**fields, "files": files})

    code, err = _import_export(export, models, capsys, monkeypatch)
    assert code == 2
    assert "refused" in err and "../../../victim.txt" in err
    assert victim.read_text() == "the user's own file"
    assert not any(p.is_file() for p in _files_under(models))  # nothing installed

    # An absolute name, and an export name that leaves the exports folder, are refused too.
    files = dict(fields["files"])
    files[str(victim)] = hashlib.sha256(b"the user's own file").hexdigest()
    _rewrite(export, {**fields, "files": files})
    code, err = _import_export(export, models, capsys, monkeypatch)
    assert code == 2 and "refused" in err and "not a plain file name" in err
    _rewrite(export, {**fields, "name": "../../outside"})
    code, err = _import_export(export, models, capsys, monkeypatch)
    assert code == 2 and "refused" in err
    assert not (home / "outside").exists() and not (models / "outside").exists()
    assert victim.read_text() == "the user's own file"

    # The export itself, unaltered, installs.
    _rewrite(export, fields)
    code, err = _import_export(export, models, capsys, monkeypatch)
    assert code == 0, err
    installed = models / export_files.EXPORTS_SUBDIR / "fake-model-0123abcd"
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        [*export_files.EXPORT_FILES, "vocab.txt.gz", export_files.MANIFEST_NAME]
    )


def test_a_link_out_of_the_export_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    fields = _fake_export(export)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"contents of text.bin")  # the sha256 the manifest expects
    (export / "text.bin").unlink()
    (export / "text.bin").symlink_to(secret)
    code, err = _import_export(export, tmp_path / "models", capsys, monkeypatch)
    assert code == 2 and "outside the export" in err
    # A link to another file of the export stays inside it: fine.
    (export / "text.bin").unlink()
    (export / "text-copy.bin").write_bytes(b"contents of text.bin")
    (export / "text.bin").symlink_to("text-copy.bin")
    _rewrite(export, fields)
    code, err = _import_export(export, tmp_path / "models", capsys, monkeypatch)
    assert code == 0, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")
@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "dev-zero-name", "fifo-manifest"])
def test_a_fifo_or_a_device_is_refused_without_hanging(kind: str, tmp_path: Path) -> None:
    export = tmp_path / "export"
    fields = _fake_export(export)
    if kind == "fifo":
        (export / "visual.bin").unlink()
        os.mkfifo(export / "visual.bin")  # reading it would wait for a writer forever
    elif kind == "dev-zero-link":
        (export / "visual.bin").unlink()
        (export / "visual.bin").symlink_to("/dev/zero")  # reading it never ends
    elif kind == "dev-zero-name":
        files = dict(fields["files"])
        files["/dev/zero"] = "0" * 64
        _rewrite(export, {**fields, "files": files})
    else:
        (export / export_files.MANIFEST_NAME).unlink()
        os.mkfifo(export / export_files.MANIFEST_NAME)
    models = tmp_path / "models"
    proc = run_cli(
        "models", "import", "--export", str(export),
        library=tmp_path / "library", check=False, timeout=120,
        env={"CLIPDESK_MODELS_DIR": str(models)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("clipdesk: error: ") and "Traceback" not in proc.stderr
    reasons = ("not a regular file", "not a plain file name", "outside the export")
    assert "refused" in proc.stderr and any(r in proc.stderr for r in reasons)
    assert not any(p.is_file() for p in _files_under(models))


def test_an_installed_export_that_is_damaged_is_replaced_by_importing_it_again(
    tmp_path: Path,
) -> None:
    export = tmp_path / "export"
    _fake_export(export)
    models = tmp_path / "models"
    installed = export_files.install_export(export, models)
    sizes = export_files.ExportManifest.read(installed).sizes
    assert sizes["text.bin"] == len(b"contents of text.bin")
    with open(installed / "text.bin", "r+b") as fh:
        fh.truncate(4)
    with pytest.raises(export_files.ExportDamagedError, match=r"text\.bin"):
        export_files.check_export(installed, export_files.ExportManifest.read(installed))
    assert export_files.install_export(export, models) == installed
    export_files.verify_export(installed)


# -- a damaged export (item 9) -----------------------------------------------------------


@pytest.fixture()
def indexed_with_export(
    clothing_export: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A library indexed with the trained model, whose export is installed; returns the
    library folder and the installed export."""
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec
    from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC

    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    installed = export_files.install_export(clothing_export)
    library = Library(tmp_path / "library")
    app = Clipdesk(library)
    app.add_folders([photos])
    list(app.index(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG)))
    library.close()
    return tmp_path / "library", installed


def _search(library_dir: Path, text: str) -> tuple[list[str], object]:
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    library = Library(library_dir)
    try:
        app = Clipdesk(library)  # a new process, as a cold `clipdesk search` is
        hits = [h.path for h in app.search_text(text, k=5)]
        return hits, app.query_encoder()
    finally:
        library.close()


def test_a_truncated_export_falls_back_to_torch_or_says_what_to_do(
    indexed_with_export: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clipdesk.models.encoder import ClipEncoder

    library_dir, installed = indexed_with_export
    want, encoder = _search(library_dir, "a red dress")
    assert isinstance(encoder, exported.ExportedEncoder)
    text_bin = installed / "text.bin"
    with open(text_bin, "r+b") as fh:
        fh.truncate(text_bin.stat().st_size // 2)

    # The full install: the model itself answers, with the same photos.
    got, encoder = _search(library_dir, "a red dress")
    assert isinstance(encoder, ClipEncoder)
    assert got == want

    # Without torch (the CPU bundle): a message that says what to do, for search and tag.
    monkeypatch.setenv(export_files.NO_TORCH_ENV, "1")
    assert main(["--library", str(library_dir), "search", "a red dress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clipdesk: error: the exported model in ") and "Traceback" not in err
    assert "text.bin" in err and "damaged" in err
    assert "clipdesk models import --export FOLDER" in err and "--again" in err
    assert main(["--library", str(library_dir), "labels", "create", "kinds", "dress", "hat"]) == 0
    assert main(["--library", str(library_dir), "tag", "--labels", "kinds"]) == 2
    assert "text.bin" in capsys.readouterr().err

    # An export from before sizes were recorded: the IR's own layout shows the damage.
    manifest = export_files.ExportManifest.read(installed)
    manifest.extra.pop("sizes")
    manifest.write(installed)
    with pytest.raises(export_files.ExportDamagedError, match=r"text\.bin has \d+ bytes"):
        exported.ExportedEncoder(installed)


def test_an_export_openvino_cannot_read_is_checked_and_named(
    clothing_export: Path, tmp_path: Path
) -> None:
    """The same size, other bytes: OpenVINO's failure leads to the sha256 check, which
    names the file (instead of OpenVINO's parser error)."""
    installed = export_files.install_export(clothing_export, tmp_path / "models")
    xml = installed / "text.xml"
    xml.write_bytes(b"\0" * xml.stat().st_size)
    encoder = exported.ExportedEncoder(installed)  # sizes match: the cheap check passes
    with pytest.raises(export_files.ExportDamagedError, match=r"text\.xml's sha256 differs"):
        encoder.encode_texts(["a hat"])


# -- a bad --model-config (item 11) ------------------------------------------------------


def _config(tmp_path: Path, name: str, change: str | Callable[[Any], object]) -> Path:
    """tests/fixtures/tiny-clip.json changed by ``change`` (a function of the dict), or
    ``change`` itself when it is text."""
    from tests.helpers import TINY_CONFIG

    path = tmp_path / f"{name}.json"
    if isinstance(change, str):
        path.write_text(change, encoding="utf-8")
        return path
    config = json.loads(TINY_CONFIG.read_text(encoding="utf-8"))
    change(config)
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_a_bad_model_config_is_refused_and_never_becomes_the_target(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.helpers import TINY_CONFIG, TINY_SPEC

    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    lib = ["--library", str(tmp_path / "library")]
    assert main([*lib, "add", str(photos)]) == 0
    assert main([*lib, "index", "--model", TINY_SPEC, "--model-config", str(TINY_CONFIG)]) == 0
    capsys.readouterr()

    deep = 50  # json reads it; open_clip's own configs nest 3 levels
    nested = '{"embed_dim": 8, "vision_cfg": {}, "text_cfg": ' + "[" * deep + "]" * deep + "}"
    cases: dict[str, tuple[str | Callable[[Any], object], str]] = {
        "negative": (lambda c: c["vision_cfg"].update(image_size=-5), "vision_cfg.image_size"),
        "zero": (lambda c: c.update(embed_dim=0), "embed_dim is 0"),
        "text": (lambda c: c["text_cfg"].update(layers="two"), "text_cfg.layers is 'two'"),
        "float": (lambda c: c["vision_cfg"].update(width=64.5), "vision_cfg.width is 64.5"),
        "not-an-object": (lambda c: c.update(vision_cfg=[1, 2]), "vision_cfg is not an object"),
        "patch": (lambda c: c["vision_cfg"].update(patch_size=128), "larger than the image"),
        "huge": (lambda c: c["text_cfg"].update(width=10**7), "more than this machine's"),
        "unknown-key": (lambda c: c["vision_cfg"].update(colour="red"), "open_clip cannot make"),
        "nested": (nested, "nests deeper than"),
        "deep-json": ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
        "list": ("[1, 2, 3]", "not a JSON object"),
        "broken": ('{"embed_dim": ', "cannot read model config"),
    }
    for name, (change, message) in cases.items():
        config = _config(tmp_path, name, change)
        code = main([*lib, "index", "--model", f"{name}:random", "--model-config", str(config)])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert "clipdesk: error: " in err and "Traceback" not in err, (name, err)
        assert message in err, (name, err)

    # The library still serves the tiny model with no switch pending; a bare index works.
    assert main([*lib, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["model"].startswith(TINY_SPEC) and status["switching_to"] is None
    assert main([*lib, "index"]) == 0


def test_a_model_that_loads_but_cannot_encode_a_photo_is_not_made_the_target(
    app: Clipdesk, tiny_spec: ModelSpec, photos: Path
) -> None:
    """The last guard, for a config that passes the checks (or came from a library made
    before them): one blank photo through the model before it becomes the target."""
    from clipdesk.errors import ModelUnavailableError
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec
    from tests.helpers import TINY_CONFIG

    assert isinstance(app, Clipdesk)
    app.add_folders([photos])
    list(app.index(tiny_spec))  # the tiny model serves
    serving = app.current_spec()
    config = json.loads(TINY_CONFIG.read_text(encoding="utf-8"))
    config["vision_cfg"]["image_size"] = -5  # builds; no photo can be encoded
    broken = ModelSpec("negative", "random", json.dumps(config, sort_keys=True))
    with pytest.raises(ModelUnavailableError, match="cannot encode a photo"):
        app.use_model(broken)
    assert app.target_spec() is None and app.current_spec() == serving


# -- an imported model goes by its name (smaller items) ----------------------------------


def test_an_imported_model_shows_by_its_name(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safetensors.torch import save_file

    from tests.helpers import TINY_CONFIG, tiny_state_dict

    models = tmp_path / "models"
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(models))
    weights = tmp_path / "my-weights.safetensors"
    save_file(tiny_state_dict("clipdesk-test-named", seed=3), str(weights))
    lib = ["--library", str(tmp_path / "library")]
    assert main([*lib, "models", "import", "--name", "holiday-model", "--weights", str(weights),
                 "--config", str(TINY_CONFIG), "--arch", "tiny-clip"]) == 0  # fmt: skip
    assert main([*lib, "add", str(photos)]) == 0
    capsys.readouterr()
    assert main([*lib, "models", "use", "holiday-model"]) == 0
    out = capsys.readouterr().out
    assert "holiday-model (imported tiny-clip) is the library's model" in out
    assert "model: holiday-model (imported tiny-clip);" in out  # the index's summary line
    assert main([*lib, "status"]) == 0
    out = capsys.readouterr().out
    assert "model:    holiday-model (imported tiny-clip)" in out
    assert str(models) not in out and "safetensors" not in out
    assert main([*lib, "models", "export", "holiday-model", "--to", str(models / "exports")]) == 0
    capsys.readouterr()
    assert main([*lib, "models", "list"]) == 0
    listing = capsys.readouterr().out
    exports = listing.split("exported models (run without torch):", 1)[1]
    assert exports.strip().startswith("* holiday-model  dim 64") and "safetensors" not in exports


# -- declared dependencies (smaller items) ------------------------------------------------


def test_every_imported_package_is_declared_and_no_private_module_is_imported() -> None:
    """What clipdesk imports is what pyproject.toml declares (a package that only arrives
    through another one can leave with its next version), and no module of another
    package is imported by a private name."""
    import ast
    import importlib.metadata

    import tomllib
    from packaging.requirements import Requirement

    from tests.helpers import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        Requirement(d).name.lower().replace("_", "-")
        for d in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    }
    owners = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    optional = {"transformers", "nncf"}  # asked for where a model needs them
    undeclared, private = set(), set()
    for path in sorted((ROOT / "clipdesk").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "clipdesk" or top in stdlib or top == "__future__":
                    continue
                if any(part.startswith("_") for part in name.split(".")[1:]):
                    private.add(f"{path.name}: {name}")
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
                if top not in optional and not dists & declared:
                    undeclared.add(f"{path.name}: {name} ({', '.join(sorted(dists)) or '?'})")
    assert not undeclared, sorted(undeclared)
    assert not private, sorted(private)


def test_download_redirects_keep_the_token_on_its_origin_and_never_downgrade() -> None:
    import io
    import urllib.request
    from http.client import HTTPMessage

    from clipdesk.models.hub import _Redirects

    def follow(url: str, to: str, method: str = "GET") -> urllib.request.Request | None:
        req = urllib.request.Request(url, method=method, headers={"Authorization": "Bearer t"})
        return _Redirects().redirect_request(req, io.BytesIO(), 302, "Found", HTTPMessage(), to)

    same = follow("https://hub.example/a", "https://hub.example/b")
    assert same is not None and same.get_header("Authorization") == "Bearer t"
    cdn = follow("https://hub.example/a", "https://cdn.example/b")
    assert cdn is not None and cdn.get_header("Authorization") is None
    assert follow("https://hub.example/a", "http://hub.example/b") is None  # no downgrade
    assert follow("https://hub.example/a", "ftp://hub.example/b") is None
    assert follow("https://hub.example/a", "https://cdn.example/b", "HEAD") is None


@pytest.mark.parametrize(
    "field,value", [("extra", []), ("dim", "4"), ("files", ["a"]), ("name", 7), ("dim", True)]
)
def test_a_manifest_with_fields_of_the_wrong_type_gets_a_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    value: object,
) -> None:
    export = tmp_path / "export"
    fields = _fake_export(export)
    _rewrite(export, {**fields, field: value})
    code, err = _import_export(export, tmp_path / "models", capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert f"its field {field!r} is a {type(value).__name__}" in err
