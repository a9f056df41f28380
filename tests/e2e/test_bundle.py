"""The built CPU bundle (packaging/build.py, `make bundle`) as a new user meets it: a fresh
HOME, a real X window (Xvfb), the first-run window, then a folder added and a search.

Skipped when no bundle has been built (``make test`` builds one first)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import FIXTURE_PHOTOS, ROOT

BUNDLE = ROOT / "dist" / "clipdesk" / "clipdesk"
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux bundle test"),
    pytest.mark.skipif(not BUNDLE.is_file(), reason="no bundle built (make bundle)"),
]
SHOTS = os.environ.get("CLIPDESK_BUNDLE_SHOTS")  # keep the screenshots here, to look at


def _bundle(*args: str, home: Path, screen: bool = False) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(home / "runtime"),
    }
    (home / "runtime").mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [str(BUNDLE), *args]
    if screen:
        xvfb_run = shutil.which("xvfb-run")
        assert xvfb_run, "xvfb-run is missing: `make setup` installs it"
        command = [xvfb_run, "-a", "-s", "-screen 0 1280x800x24", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def _colours(image: Image.Image, box: tuple[float, float, float, float]) -> int:
    width, height = image.size
    part = image.crop(
        (int(width * box[0]), int(height * box[1]), int(width * box[2]), int(height * box[3]))
    )
    return len(part.getcolors(maxcolors=1 << 24) or [])


def test_bundle_first_run_then_add_a_folder_and_search(tmp_path: Path) -> None:
    home = tmp_path / "home"
    photos = tmp_path / "Pictures"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    before = {p: p.stat().st_mtime_ns for p in photos.rglob("*.jpg")}

    first = tmp_path / "first-run.png"
    out = _bundle("gui", "--screenshot", str(first), home=home, screen=True).stdout
    assert "(xcb," in out and "settled" in out, out
    # The welcome page: text and buttons on a plain background, no photos yet.
    image = Image.open(first).convert("RGB")
    assert image.size[0] >= 1000 and image.size[1] >= 600
    assert 50 < _colours(image, (0.25, 0.2, 0.75, 0.8)) < 3000
    library = home / ".local" / "share" / "clipdesk" / "library"
    assert (library / "library.sqlite3").is_file()  # the library: in the user data folder

    # The bundle never indexes someone's photos with its self-test model by itself: the
    # user imports a model (here that one, as a person would import a real one).
    (test_model,) = (BUNDLE.parent / "_internal" / "models").glob("clothing-clip-*")
    _bundle("models", "import", "--export", str(test_model), home=home)
    _bundle("models", "use", test_model.name, "--no-index", home=home)
    _bundle("add", str(photos), home=home)
    second = tmp_path / "search.png"
    out = _bundle(
        "gui", "--search", "a photo of shoes", "--screenshot", str(second), home=home, screen=True
    ).stdout
    # The window's search keeps the relevant photos only (its default): some, not all 30.
    shown = re.search(r" (\d+) results", out)
    assert "settled" in out and shown and 1 <= int(shown.group(1)) < 30, out
    image = Image.open(second).convert("RGB")
    assert _colours(image, (0.25, 0.2, 0.7, 0.8)) > 3000, "the grid shows no photos"
    hits = _bundle("search", "a photo of shoes", "-k", "3", "--json", home=home).stdout
    assert '"path"' in hits and "/shoes/" in hits.split('"path"')[1].split(",")[0]
    # The photos were only read.
    assert {p: p.stat().st_mtime_ns for p in photos.rglob("*.jpg")} == before
    assert not any(p.name.startswith(".") for p in photos.rglob("*"))
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(first, Path(SHOTS) / "bundle-first-run.png")
        shutil.copy(second, Path(SHOTS) / "bundle-search.png")


ARCHIVES = sorted((ROOT / "dist").glob("clipdesk-*-linux-*.tar.gz"))


@pytest.mark.skipif(not ARCHIVES, reason="no archive built (make bundle)")
def test_install_upgrade_uninstall_keep_the_library_and_photos(tmp_path: Path) -> None:
    import tarfile

    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    with tarfile.open(ARCHIVES[-1]) as tar:
        tar.extractall(tmp_path / "unpacked", filter="tar")
    (unpacked,) = (tmp_path / "unpacked").iterdir()

    def sh(*command: str) -> str:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    sh(str(unpacked / "install.sh"))
    share = home / ".local" / "share"
    exe = home / ".local" / "bin" / "clipdesk"
    desktop_entry = share / "applications" / "io.github.clipdesk.Clipdesk.desktop"
    assert exe.is_symlink() and desktop_entry.is_file()
    assert f"Exec={share}/clipdesk-app/current/clipdesk gui %F" in desktop_entry.read_text()
    assert (
        share / "icons" / "hicolor" / "256x256" / "apps" / "io.github.clipdesk.Clipdesk.png"
    ).is_file()

    photos = tmp_path / "Pictures"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in photos.rglob("*.jpg")}
    (test_model,) = (share / "clipdesk-app" / "current" / "_internal" / "models").glob("clothing*")
    sh(str(exe), "add", str(photos))
    refused = subprocess.run(
        [str(exe), "index"], capture_output=True, text=True, env=env, timeout=300
    )  # no model yet: the bundled test model is not used on someone's photos
    assert refused.returncode == 2 and "not available in exported form" in refused.stderr
    sh(str(exe), "models", "import", "--export", str(test_model))
    sh(str(exe), "models", "use", test_model.name, "--no-index")
    sh(str(exe), "index")
    library = share / "clipdesk" / "library"
    found = sh(str(exe), "search", "a photo of shoes", "-k", "1")

    sh(str(unpacked / "install.sh"))  # an upgrade: the same steps over an installed copy
    assert sh(str(exe), "search", "a photo of shoes", "-k", "1") == found
    assert "30 indexed" in sh(str(exe), "status")

    sh(str(share / "clipdesk-app" / "uninstall.sh"))
    assert not exe.exists() and not desktop_entry.exists()
    assert not (share / "clipdesk-app").exists()
    assert (library / "library.sqlite3").is_file()  # the library stays

    sh(str(unpacked / "install.sh"))
    sh(str(share / "clipdesk-app" / "uninstall.sh"), "--remove-library")
    assert not (share / "clipdesk").exists()
    # Installing, upgrading, uninstalling and removing the library never touched a photo.
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in photos.rglob("*.jpg")} == before


# The bundle on other CPUs than the build machine's: qemu-user emulates one (Debian's
# qemu-user 7.2 emulates up to AVX2, no AVX-512). PyInstaller's bootloader re-executes
# itself and qemu-user does not follow an exec, so the frozen app runs as its own child.
QEMU = shutil.which("qemu-x86_64")
ON_CI = os.environ.get("CI", "").lower() == "true"


def _on_cpu(cpu: str, *args: str, home: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    if QEMU is None:
        if ON_CI:
            pytest.fail("qemu-x86_64 is missing on CI: tools/system-deps.sh installs qemu-user")
        pytest.skip("qemu-x86_64 is missing (apt-get install qemu-user)")
    if os.uname().machine != "x86_64":
        pytest.skip("an x86-64 bundle")
    internal = BUNDLE.parent / "_internal"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "_PYI_PARENT_PROCESS_LEVEL": "1",
        "_PYI_APPLICATION_HOME_DIR": str(internal),
        "_PYI_ARCHIVE_FILE": str(BUNDLE),
        "LD_LIBRARY_PATH": str(internal),
    }
    return subprocess.run(
        [QEMU, "-cpu", cpu, str(BUNDLE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=home,
    )


def test_bundle_self_test_passes_on_a_cpu_without_avx512(tmp_path: Path) -> None:
    """Haswell (2013): AVX2 and FMA, no AVX-512, so the x86-64-v3 builds are chosen. The
    bundle built with -march=native died here with SIGILL 1.9 s after start."""
    proc = _on_cpu("Haswell", "--self-test", home=tmp_path / "home", timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "self-test passed" in out
    assert "native code for x86-64-v3: x86-64-v3/hnswlib" in out, out[-4000:]


def test_bundle_self_test_passes_on_a_baseline_cpu_without_avx(tmp_path: Path) -> None:
    """Nehalem (2008): x86-64-v2, SSE4.2 but no AVX, so the baseline builds run."""
    proc = _on_cpu("Nehalem", "--self-test", home=tmp_path / "home", timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "self-test passed" in out
    assert "native code for x86-64-v2: _internal/hnswlib" in out, out[-4000:]


def test_bundle_on_a_cpu_older_than_its_baseline_says_so(tmp_path: Path) -> None:
    """Core 2 (Conroe, 2006): no SSE4.2, no POPCNT. A message and exit status 3, before
    any native module is loaded, instead of an illegal instruction."""
    proc = _on_cpu("Conroe", "--help", home=tmp_path / "home", timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "this CPU is too old" in proc.stderr and "x86-64-v2" in proc.stderr
    assert "sse4_2" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
