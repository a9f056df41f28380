"""Build clipdesk's CPU bundle for this platform, check it, and pack it.

    .venv/bin/python packaging/build.py          (or: make bundle)

1. exports the models to bundle with the full install (torch): the project's test model
   (for ``--self-test``), clipdesk's default model when its weights are installed, and
   each ``--model SPEC``;
2. makes a build venv without torch (packaging/requirements-cpu.txt) and runs PyInstaller
   on packaging/clipdesk.spec: a one-folder app, ``dist/clipdesk/``;
3. on Linux packs ``dist/clipdesk-VERSION-linux-ARCH.tar.gz`` with install.sh and
   uninstall.sh (per user: ~/.local, a menu entry and the icon);
   ``--variant gpu`` instead builds ``dist/clipdesk-gpu/`` with torch (CUDA) and open_clip,
   not packed, and runs its self-test in place;
4. unpacks the archive in a temporary folder outside the source tree and runs the bundle's
   ``--self-test`` there with an empty HOME; fails the build if it fails;
5. prints the size of each part (Qt, runtime, models, the rest) and writes it to
   ``dist/sizes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
BUILD = REPO / "build" / "bundle"
DIST = REPO / "dist"
TEST_MODEL = REPO / "tests" / "fixtures" / "clothing-clip.safetensors"
TEST_CONFIG = REPO / "tests" / "fixtures" / "clothing-clip.json"
SIZE_TARGET_MB = 700
TORCH_PARTS = ("torch", "nvidia", "triton", "libcu", "libnv", "libtorch", "functorch")


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def export_models(specs: list[str], target: Path) -> list[dict[str, object]]:
    """Export the bundled models with the full install (this interpreter has torch)."""
    from clipdesk.encoder import ClipEncoder, ModelSpec
    from clipdesk.export import export_model
    from clipdesk.exported import ExportManifest
    from clipdesk.models import DEFAULT_NAME, ModelStore
    from clipdesk.selftest import SELF_TEST_ROLE

    target.mkdir(parents=True, exist_ok=True)
    wanted: list[tuple[ModelSpec, str]] = [
        (ModelSpec.parse(f"clothing-clip:{TEST_MODEL}", TEST_CONFIG), SELF_TEST_ROLE)
    ]
    default = ModelStore().spec_for(DEFAULT_NAME)
    if default is not None:
        wanted.append((default, "default"))
    else:
        log(
            f"the default model ({DEFAULT_NAME}) is not installed here, so the bundle ships "
            "only the test model (`clipdesk models download` it first for a user bundle)"
        )
    wanted += [(ModelSpec.parse(spec), "extra") for spec in specs]
    made = []
    for spec, role in wanted:
        encoder = ClipEncoder(spec, "cpu")
        folder = export_model(encoder, target, report=lambda line: log("  " + line))
        manifest = ExportManifest.read(folder)
        if manifest.extra.get("role") != role:
            manifest.extra["role"] = role
            manifest.write(folder)
        made.append({"name": folder.name, "role": role, "mb": _mb(folder)})
    return made


def build_venv(path: Path, variant: str) -> Path:
    """The cpu variant's venv has no torch; the gpu variant's has all of clipdesk's
    dependencies (torch with CUDA where pip picks that build)."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = path / "requirements.stamp"
    wanted = variant + (PACKAGING / "requirements-cpu.txt").read_text()
    wanted += (REPO / "constraints.txt").read_text()
    if variant == "gpu":
        wanted += (REPO / "pyproject.toml").read_text()
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(path, ignore_errors=True)
    venv.create(path, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    pip += ["-c", str(REPO / "constraints.txt"), "-r", str(PACKAGING / "requirements-cpu.txt")]
    if variant == "gpu":
        pip.append(str(REPO))  # clipdesk's own dependencies: torch, open_clip, ...
    run(pip)
    stamp.write_text(wanted)
    return python


def pyinstaller(python: Path, models: Path, name: str, variant: str) -> Path:
    env = dict(
        os.environ,
        CLIPDESK_BUILD_MODELS=str(models),
        CLIPDESK_BUILD_NAME=name,
        CLIPDESK_BUILD_VARIANT=variant,
    )
    # clipdesk itself is taken from the source tree (pathex in the spec), not installed.
    run(
        [
            str(python),
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--clean",
            "--log-level",
            "WARN",
            "--distpath",
            str(DIST),
            "--workpath",
            str(BUILD / f"pyinstaller-{name}"),
            str(PACKAGING / "clipdesk.spec"),
        ],
        env=env,
    )
    return DIST / name


def linux_archive(app: Path, version: str) -> Path:
    stem = f"clipdesk-{version}-linux-{platform.machine()}"
    archive = DIST / f"{stem}.tar.gz"
    staging = BUILD / stem
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(app, staging / "app", symlinks=True)
    for script in ("install.sh", "uninstall.sh"):
        shutil.copy2(PACKAGING / "linux" / script, staging / script)
        (staging / script).chmod(0o755)
    shutil.copy2(REPO / "resources" / "linux" / "io.github.clipdesk.Clipdesk.desktop", staging)
    (staging / "VERSION").write_text(version + "\n")
    log(f"packing {archive.name}")
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(staging, arcname=stem)
    shutil.rmtree(staging)
    return archive


def _clean_env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }


def self_test_folder(app: Path) -> float:
    """Run the bundle's self-test where it was built, from outside the source tree, with an
    empty HOME (the gpu variant: too big to pack and unpack for a check)."""
    with tempfile.TemporaryDirectory(prefix="clipdesk-bundle-check-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        started = time.monotonic()
        run([str(app / "clipdesk"), "--self-test"], env=_clean_env(home), cwd=tmp)
        return time.monotonic() - started


def self_test(archive: Path) -> float:
    """Unpack and install as a user would, outside the source tree, with an empty HOME."""
    with tempfile.TemporaryDirectory(prefix="clipdesk-bundle-check-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(root / "unpacked", filter="tar")
        (folder,) = (root / "unpacked").iterdir()
        env = _clean_env(home)
        run([str(folder / "install.sh")], env=env, cwd=root)
        exe = home / ".local" / "bin" / "clipdesk"
        started = time.monotonic()
        run([str(exe), "--self-test"], env=env, cwd=root)
        seconds = time.monotonic() - started
        run([str(home / ".local" / "share" / "clipdesk-app" / "uninstall.sh")], env=env, cwd=root)
        return seconds


def _mb(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 1e6, 1)
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return round(total / 1e6, 1)


def sizes(app: Path) -> dict[str, float]:
    internal = app / "_internal"
    parts = {"qt": 0.0, "openvino": 0.0, "torch": 0.0, "models": 0.0, "numpy": 0.0, "rest": 0.0}
    for path in app.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(internal).as_posix() if path.is_relative_to(internal) else path.name
        mb = path.stat().st_size / 1e6
        if rel.startswith(("PySide6", "shiboken6")) or "Qt6" in rel or "libicu" in rel:
            parts["qt"] += mb
        elif "openvino" in rel or rel.startswith(("libtbb", "libhwloc")):
            parts["openvino"] += mb
        elif rel.startswith(TORCH_PARTS):
            parts["torch"] += mb
        elif rel.startswith("models/"):
            parts["models"] += mb
        elif rel.startswith(("numpy", "numpy.libs")) or "openblas" in rel:
            parts["numpy"] += mb
        else:
            parts["rest"] += mb
    parts = {k: round(v, 1) for k, v in parts.items()}
    parts["total"] = round(sum(parts.values()), 1)
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SPEC",
        help="also bundle this model (exported here; needs its weights)",
    )
    parser.add_argument("--skip-self-test", action="store_true")
    parser.add_argument(
        "--variant",
        choices=["cpu", "gpu"],
        default="cpu",
        help="cpu: small, no torch, exported models (default); gpu: with torch and CUDA",
    )
    args = parser.parse_args()
    from clipdesk import __version__

    started = time.monotonic()
    models = BUILD / "models"
    shutil.rmtree(models, ignore_errors=True)
    bundled = export_models(args.model, models)
    variant = args.variant
    python = build_venv(BUILD / ("venv" if variant == "cpu" else "venv-gpu"), variant)
    app = pyinstaller(python, models, "clipdesk" if variant == "cpu" else "clipdesk-gpu", variant)
    report: dict[str, object] = {"version": __version__, "variant": variant}
    report["platform"] = platform.platform()
    report["models"] = bundled
    report["unpacked_mb"] = sizes(app)
    if variant == "gpu":
        if not args.skip_self_test:
            report["self_test_s"] = round(self_test_folder(app), 1)
    elif sys.platform.startswith("linux"):
        archive = linux_archive(app, __version__)
        report["archive"] = archive.name
        report["archive_mb"] = _mb(archive)
        if not args.skip_self_test:
            report["self_test_s"] = round(self_test(archive), 1)
    report["build_s"] = round(time.monotonic() - started, 1)
    (DIST / ("sizes.json" if variant == "cpu" else "sizes-gpu.json")).write_text(
        json.dumps(report, indent=1) + "\n"
    )
    log(json.dumps(report, indent=1))
    total = report["unpacked_mb"]["total"]  # type: ignore[index]
    log(f"unpacked {total} MB (target <= {SIZE_TARGET_MB} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
