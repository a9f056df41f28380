"""``clipdesk --self-test``: prove that this installation works, headless, in a minute.

Indexes a few bundled sample photos with a bundled model into a throw-away library, checks
that text searches put the expected photo first (through the services, then through the
real window on Qt's offscreen platform), and exits 0 only then. Nothing outside a temporary
folder is written: not the user's library, models folder or settings.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from clipdesk.errors import ClipdeskError
from clipdesk.spec import ModelSpec

SELF_TEST_ROLE = "self-test"
SAMPLES_ENV = "CLIPDESK_SAMPLES"
NATIVE_BUILDS_ENV = "CLIPDESK_NATIVE_BUILDS"  # set by the bundle's entry point
PACKAGE = Path(__file__).resolve().parents[1]  # clipdesk/
REPO = PACKAGE.parent
# An installed wheel carries the test model and the sample photos here (pyproject.toml maps
# tests/fixtures to clipdesk/self_test_data); a source checkout uses tests/fixtures itself.
PACKAGED = PACKAGE / "self_test_data"
FIXTURES = PACKAGED if PACKAGED.is_dir() else REPO / "tests" / "fixtures"
# (query, folder its best photo must be in): classes the test model tells apart well.
QUERIES = (("a photo of shoes", "shoes"), ("a photo of a hat", "hat"), ("pants", "pants"))


def samples_dir() -> Path | None:
    """Sample photos: $CLIPDESK_SAMPLES, the bundle's, or the test photos (an installed
    wheel's or the repository's)."""
    candidates = [os.environ.get(SAMPLES_ENV)]
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        candidates.append(str(Path(frozen_root) / "samples"))
    candidates.append(str(FIXTURES / "photos"))
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def self_test_spec(work: Path) -> ModelSpec:
    """The project's test model: its bundled export, else (a source checkout with torch)
    its weights in tests/fixtures (an installed wheel: clipdesk/self_test_data)."""
    from clipdesk.models import export_files  # on use: --help starts fast

    for _folder, manifest in export_files.available_exports(work / "models"):
        if manifest.extra.get("role") == SELF_TEST_ROLE:
            return manifest.spec
    weights = FIXTURES / "clothing-clip.safetensors"
    config = FIXTURES / "clothing-clip.json"
    if export_files.torch_available() and weights.is_file():
        return ModelSpec.parse(f"clothing-clip:{weights}", config)
    raise ClipdeskError("no self-test model here (the bundle lacks its models folder?)")


def run_self_test(out: TextIO = sys.stdout, keep: bool = False) -> int:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="clipdesk-self-test-"))
    saved_env = {
        k: os.environ.get(k)
        for k in ("CLIPDESK_MODELS_DIR", "QT_QPA_PLATFORM", "CLIPDESK_AUTO_EXPORT")
    }
    os.environ["CLIPDESK_MODELS_DIR"] = str(work / "models")  # backend choices land here
    os.environ["CLIPDESK_AUTO_EXPORT"] = "0"  # a throw-away library: nothing to speed up
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    failures: list[str] = []

    def say(line: str) -> None:
        out.write(f"[{time.perf_counter() - started:5.1f} s] {line}\n")
        out.flush()

    try:
        from clipdesk.library import Library  # on use: --help starts fast
        from clipdesk.services import Clipdesk  # on use: --help starts fast

        photos = samples_dir()
        if photos is None:
            raise ClipdeskError("no sample photos found")
        spec = self_test_spec(work)
        say(f"clipdesk {__import__('clipdesk').__version__}, Python {sys.version.split()[0]}")
        level = os.environ.get(NATIVE_BUILDS_ENV)
        if level:  # the bundle: which of its native builds this CPU runs (packaging/entry.py)
            import hnswlib

            say(f"native code for {level}: {Path(hnswlib.__file__).parent.name}/hnswlib")
        services = Clipdesk(Library(work / "library"))
        services.add_folders([photos])
        for progress in services.index(spec):
            if progress.phase == "prepare" and progress.done:
                say(f"encoder: {progress.message}")
        status = services.status()
        say(f"model {status.model}; {status.indexed} of {status.photos} sample photos indexed")
        if status.indexed < status.photos or not status.photos:
            failures.append(f"only {status.indexed} of {status.photos} photos were indexed")
        for query, folder in QUERIES:
            hits = services.search_text(query, k=3)
            best = Path(hits[0].path) if hits else None
            ok = best is not None and best.parent.name == folder
            say(
                f"search {query!r}: {best.parent.name + '/' + best.name if best else 'nothing'}"
                f" {'ok' if ok else f'FAILED (expected a photo in {folder}/)'}"
            )
            if not ok:
                failures.append(f"{query!r} did not find a photo in {folder}/ first")
        from clipdesk.gui.selftest import window_check  # Qt: only for the window's check

        failures += window_check(services, work, QUERIES[0], say)
        from clipdesk.models import export_files  # on use: --help starts fast

        if export_files.torch_available():  # the full version: open_clip on torch runs too
            failures += _torch_check(spec, photos, say)
    except Exception as exc:  # the point of a self-test: report, never crash
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        for failure in failures:
            out.write(f"self-test FAILED: {failure}\n")
        return 1
    out.write(f"self-test passed in {time.perf_counter() - started:.1f} s\n")
    return 0


def _torch_check(spec: ModelSpec, photos: Path, say: Callable[[str], None]) -> list[str]:
    """open_clip on torch builds the test model's architecture and encodes a photo."""
    from clipdesk.imaging import load_rgb  # on use: --help starts fast
    from clipdesk.models.encoder import ClipEncoder  # on use: --help starts fast

    random = ModelSpec(spec.arch, "random", spec.config_json)
    encoder = ClipEncoder(random, "auto")
    vector = encoder.encode_images([load_rgb(str(next(photos.rglob("*.jpg"))), 224)])
    say(f"torch: open_clip runs on {encoder.device_reason.split(',')[0]}")
    if vector.shape != (1, encoder.dim):
        return [f"open_clip on torch gave a vector of shape {vector.shape}"]
    return []
