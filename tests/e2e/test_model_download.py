"""Model downloads over real HTTP: a hub-like server on 127.0.0.1 serves a tiny open_clip
model, and the store fetches it through huggingface_hub, resumes, verifies and installs it."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.helpers import run_cli, tiny_state_dict

if TYPE_CHECKING:
    from clipdesk.models.store import ModelStore

TINY_ARCH = "clipdesk-test-tiny-download"
TINY_TAG = "test"
REPO = "clipdesk-test/tiny-clip"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubState:
    """What the fake hub serves, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    advertised_sha: dict[str, str] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    drop_once_at: int | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class HubHandler(http.server.BaseHTTPRequestHandler):
    """``/{repo}/resolve/{revision}/{file}`` with the headers huggingface_hub relies on:
    X-Repo-Commit, ETag/X-Linked-Etag (the sha256 of an LFS file), sizes and Range."""

    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def _lookup(self) -> tuple[str, bytes] | None:
        with self.state.lock:
            self.state.requests.append((self.command, self.path, self.headers.get("Range")))
        parts = self.path.split("?")[0].split("/resolve/")
        if len(parts) != 2:
            return None
        repo = parts[0].strip("/")
        _revision, _, filename = parts[1].partition("/")
        key = f"{repo}/{filename}"
        data = self.state.files.get(key)
        return (key, data) if data is not None else None

    def _not_found(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _meta_headers(self, key: str, data: bytes) -> None:
        sha = self.state.advertised_sha.get(key) or hashlib.sha256(data).hexdigest()
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")

    def do_HEAD(self) -> None:
        found = self._lookup()
        if found is None:
            return self._not_found()
        key, data = found
        self.send_response(200)
        self._meta_headers(key, data)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_GET(self) -> None:
        found = self._lookup()
        if found is None:
            return self._not_found()
        key, data = found
        if key in self.state.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes=") :].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self._meta_headers(key, data)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with self.state.lock:
            drop_at, self.state.drop_once_at = self.state.drop_once_at, None
        if drop_at is not None and start < drop_at < len(data):
            # Send part of the body, then hang up: a connection lost mid-file.
            self.wfile.write(body[: drop_at - start])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@dataclass
class FakeHub:
    url: str
    state: HubState
    weights_key: str
    weights: bytes

    def gets(self) -> list[str | None]:
        return [rng for method, path, rng in self.state.requests if method == "GET"]


@pytest.fixture(scope="module")
def tiny_weights() -> bytes:
    """A tiny open_clip model (tests/fixtures/tiny-clip.json), random init, as safetensors."""
    from safetensors.torch import save

    return save(tiny_state_dict(TINY_ARCH, seed=1234))


@pytest.fixture()
def hub(tiny_weights: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A hub on 127.0.0.1 serving the tiny model, and a catalog entry pointing at it."""
    import huggingface_hub
    from huggingface_hub import constants

    from clipdesk.models import catalog as models

    # The test run is offline by default (conftest); this server is the one exception.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    huggingface_hub.close_session()  # a client that sees NO_PROXY
    entry = models.CatalogEntry(
        name="tiny-test",
        arch=TINY_ARCH,
        pretrained=TINY_TAG,
        hf_repo=REPO,
        size_bytes=len(tiny_weights),
        dim=64,
        imagenet_top1=None,
        relative_speed=50.0,
        languages="English",
        description="a tiny random model for tests",
    )
    monkeypatch.setattr(models, "CATALOG", (*models.CATALOG, entry))

    state = HubState()
    weights_key = f"{REPO}/{models.SAFETENSORS_NAME}"
    state.files[weights_key] = tiny_weights
    handler = type("Handler", (HubHandler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeHub(
            f"http://127.0.0.1:{server.server_address[1]}", state, weights_key, tiny_weights
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        huggingface_hub.close_session()


def _store(tmp_path: Path, hub: FakeHub) -> ModelStore:
    from clipdesk.models.store import ModelStore

    return ModelStore(tmp_path / "models", endpoint=hub.url)


def _installed(store: ModelStore, name: str) -> bool:
    from clipdesk.models.store import ModelStore

    assert isinstance(store, ModelStore)
    return next(i for i in store.available() if i.name == name).installed


def test_download_reports_progress_verifies_and_installs(tmp_path: Path, hub: FakeHub) -> None:
    from clipdesk.models.store import ModelStore

    store = _store(tmp_path, hub)
    assert isinstance(store, ModelStore)
    assert not _installed(store, "tiny-test")
    assert store.spec_for("tiny-test") is None

    seen: list[tuple[int, int]] = []
    spec = store.download("tiny-test", progress=lambda done, total: seen.append((done, total)))

    size = len(hub.weights)
    assert seen[-1] == (size, size)
    assert len(seen) > 3, "progress should be reported as the bytes arrive"
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert {t for _, t in seen} == {size}
    assert hub.gets() == [None]  # one plain GET, no Range
    weights = Path(spec.pretrained)
    assert weights.is_absolute() and weights.is_relative_to(tmp_path / "models")
    assert weights.read_bytes() == hub.weights
    assert spec.key == f"{TINY_ARCH}:{TINY_TAG}"  # recognised as the catalog model
    assert _installed(store, "tiny-test")
    assert store.spec_for(f"{TINY_ARCH}:{TINY_TAG}") == spec
    assert not list((tmp_path / "models").rglob("*.part"))
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert manifest["models"]["tiny-test"]["sha256"] == hashlib.sha256(hub.weights).hexdigest()

    # Installed: a second download is a no-op, with no network at all.
    hub.state.requests.clear()
    assert store.download("tiny-test") == spec
    assert hub.state.requests == []


def test_a_dropped_connection_resumes_with_a_range(tmp_path: Path, hub: FakeHub) -> None:
    store = _store(tmp_path, hub)
    hub.state.drop_once_at = len(hub.weights) // 2 + 12345
    spec = store.download("tiny-test")

    gets = hub.gets()
    assert len(gets) == 2, gets
    assert gets[0] is None
    assert gets[1] is not None and gets[1].startswith("bytes=")
    resumed_from = int(gets[1][len("bytes=") :].rstrip("-"))
    assert 0 < resumed_from <= hub.state.files[hub.weights_key].__len__() // 2 + 12345
    assert Path(spec.pretrained).read_bytes() == hub.weights
    assert _installed(store, "tiny-test")


def test_a_cancelled_download_resumes_in_the_next_run(tmp_path: Path, hub: FakeHub) -> None:
    from clipdesk.models.hub import DownloadCancelled
    from clipdesk.progress import CancelToken

    store = _store(tmp_path, hub)
    cancel = CancelToken()

    def stop_after_3mb(done: int, total: int) -> None:
        if done >= 3_000_000:
            cancel.cancel()

    with pytest.raises(DownloadCancelled, match="run it again to resume"):
        store.download("tiny-test", stop_after_3mb, cancel)
    parts = list((tmp_path / "models").rglob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 3_000_000 <= kept < len(hub.weights)
    assert not _installed(store, "tiny-test")

    spec = store.download("tiny-test")
    assert hub.gets()[-1] == f"bytes={kept}-"
    assert Path(spec.pretrained).read_bytes() == hub.weights
    assert not list((tmp_path / "models").rglob("*.part"))


def test_a_corrupted_download_fails_its_checksum_and_installs_nothing(
    tmp_path: Path, hub: FakeHub
) -> None:
    from clipdesk.errors import ModelUnavailableError

    store = _store(tmp_path, hub)
    hub.state.corrupt.add(hub.weights_key)
    with pytest.raises(ModelUnavailableError) as caught:
        store.download("tiny-test")
    message = str(caught.value)
    assert "failed its checksum" in message
    assert hashlib.sha256(hub.weights).hexdigest() in message
    assert "nothing was installed" in message
    assert not _installed(store, "tiny-test")
    assert store.spec_for("tiny-test") is None
    leftovers = [p for p in (tmp_path / "models").rglob("*") if p.is_file() and p.name != ".lock"]
    assert leftovers == []


def test_no_network_gives_the_clear_message(tmp_path: Path, hub: FakeHub) -> None:
    from clipdesk.errors import ModelUnavailableError
    from clipdesk.models.store import ModelStore

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = ModelStore(tmp_path / "models", endpoint=closed)
    assert not store.reachable(timeout=1)
    with pytest.raises(ModelUnavailableError) as caught:
        store.download("tiny-test")
    message = str(caught.value)
    assert message.startswith("could not download tiny-test")
    assert "no network" in message and "`clipdesk models import --name " in message
    assert not _installed(store, "tiny-test")


def test_offline_mode_gives_the_clear_message(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from clipdesk.errors import ModelUnavailableError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    store = _store(tmp_path, hub)
    with pytest.raises(
        ModelUnavailableError, match=re.escape("no network (HF_HUB_OFFLINE is set)")
    ) as caught:
        store.download("tiny-test")
    assert "`clipdesk models import --name " in str(caught.value)
    assert hub.state.requests == []


def test_the_downloaded_model_loads_and_encodes(tmp_path: Path, hub: FakeHub) -> None:
    import open_clip
    import torch
    from safetensors.torch import load

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.models.loading import create_pretrained_model

    store = _store(tmp_path, hub)
    store.download("tiny-test")
    spec = store.spec_for("tiny-test")
    assert spec is not None
    encoder = ClipEncoder(spec, "cpu")
    got = encoder.encode_texts(["a red shoe", "a blue hat"])
    assert got.shape == (2, 64)
    assert encoder.spec.key == f"{TINY_ARCH}:{TINY_TAG}"

    # The same weights loaded by open_clip alone, from the served bytes.
    reference = open_clip.create_model(TINY_ARCH, pretrained=None).eval()
    reference.load_state_dict(load(hub.weights))
    tokens = open_clip.get_tokenizer(TINY_ARCH)(["a red shoe", "a blue hat"])
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference.encode_text(tokens).float(), dim=-1)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)

    # The tag path (the encoder's pretrained branch) builds the same model from the file.
    model: Any = create_pretrained_model(TINY_ARCH, TINY_TAG, Path(spec.pretrained)).eval()
    with torch.no_grad():
        again = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
    np.testing.assert_allclose(again.numpy(), want.numpy(), atol=1e-5)


def test_cli_download_without_network_and_list(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {"CLIPDESK_MODELS_DIR": str(tmp_path / "models"), "HF_HUB_OFFLINE": "0"}
    proc = run_cli(
        "models",
        "download",
        "vit-b-32",
        "--mirror",
        closed,
        library=tmp_path / "library",
        check=False,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "clipdesk: error: could not download vit-b-32" in proc.stderr
    # which file, from where, and the command that takes it in
    assert "no network. On a computer with network, get open_clip_model.safetensors" in proc.stderr
    assert "huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in proc.stderr
    assert "`clipdesk models import --name vit-b-32 --arch ViT-B-32 --weights FILE`" in proc.stderr
    assert "Traceback" not in proc.stderr

    listing = run_cli("models", "list", "--json", library=tmp_path / "library", env=env)
    rows = json.loads(listing.stdout)
    assert {r["name"] for r in rows} >= {"vit-b-32", "vit-b-16", "mobileclip-s1"}
    assert not any(r["installed"] for r in rows)
    assert [r["name"] for r in rows if r["default"]] == ["vit-b-32"]


def test_the_offline_message_gives_a_command_that_installs_the_model(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, the message names the file and the import command; following it installs the
    catalog model as a download would (same name, same vector key)."""
    import shlex

    from huggingface_hub import constants

    from clipdesk.cli.main import main
    from clipdesk.errors import ModelUnavailableError
    from clipdesk.models.store import ModelStore
    from clipdesk.spec import model_key

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    store = ModelStore(tmp_path / "models", endpoint=hub.url)
    with pytest.raises(ModelUnavailableError) as caught:
        store.download("tiny-test")
    command = re.search(r"`(clipdesk models import [^`]*)`", str(caught.value))
    assert command is not None, caught.value
    weights = tmp_path / "fetched-by-hand.safetensors"
    weights.write_bytes(hub.weights)
    argv = shlex.split(command.group(1).replace("FILE", str(weights)))[1:]
    assert main(["--library", str(tmp_path / "lib"), *argv]) == 0
    spec = store.spec_for("tiny-test")
    assert spec is not None and spec.key == model_key(TINY_ARCH, None, TINY_TAG)
    assert _installed(store, "tiny-test") and weights.read_bytes() == hub.weights
    other = tmp_path / "other.safetensors"
    other.write_bytes(hub.weights)
    with pytest.raises(ModelUnavailableError, match="--arch clipdesk-test-tiny-download"):
        ModelStore(tmp_path / "models2").import_model("tiny-test", other, arch="ViT-B-32")
