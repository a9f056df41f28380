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
import inspect
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
BUILD = REPO / "build" / "bundle"
DIST = REPO / "dist"
TEST_MODEL = REPO / "tests" / "fixtures" / "clothing-clip.safetensors"
TEST_CONFIG = REPO / "tests" / "fixtures" / "clothing-clip.json"
SIZE_TARGET_MB = 700
TORCH_PARTS = ("torch", "nvidia", "triton", "libcu", "libnv", "libtorch", "functorch")
# Native code compiled here is compiled for these x86-64 levels, never for the build machine
# (-march=native put 134 AVX-512 instructions into hnswlib on a machine that had them, and
# the bundle died with SIGILL on every CPU without). x86-64-v2 (SSE4.2, POPCNT: Intel since
# Nehalem 2008, AMD since Bulldozer 2011) is the bundle's floor, and OpenVINO's and numpy's
# too; x86-64-v3 adds AVX2, FMA and BMI (Intel Haswell 2013, AMD Excavator 2015 / Zen).
BASELINE = "x86-64-v2"
FAST = "x86-64-v3"
# Everything else in the bundle comes as a wheel built elsewhere for a stated baseline
# (manylinux numpy, Pillow, simplejpeg, OpenVINO, PySide6, ...): pip may build nothing else
# from source here (build_venv passes --only-binary :all:).
BUILT_HERE = ("hnswlib",)


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def export_models(specs: list[str], target: Path) -> list[dict[str, object]]:
    """Export the bundled models with the full install (this interpreter has torch)."""
    from clipdesk.cli.selftest import SELF_TEST_ROLE
    from clipdesk.models.catalog import DEFAULT_NAME, catalog_entry, license_notice
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.models.export import export_model
    from clipdesk.models.export_files import ExportManifest
    from clipdesk.models.store import ModelStore
    from clipdesk.spec import ModelSpec

    target.mkdir(parents=True, exist_ok=True)
    wanted: list[tuple[ModelSpec, str]] = [
        (ModelSpec.parse(f"clothing-clip:{TEST_MODEL}", TEST_CONFIG), SELF_TEST_ROLE)
    ]
    store = ModelStore()  # the models folder this build runs with
    default = store.spec_for(DEFAULT_NAME)
    if default is not None:
        wanted.append((default, "default"))
    else:
        log(
            f"the default model ({DEFAULT_NAME}) is not installed here, so the bundle ships "
            "only the test model (`clipdesk models download` it first for a user bundle)"
        )
    for asked in specs:
        entry = catalog_entry(asked)
        if entry is not None and entry.research_only:  # its license allows no redistribution
            raise SystemExit(f"{entry.name} is not bundled: {license_notice(entry)}")
    wanted += [(ModelSpec.parse(spec), "extra") for spec in specs]
    made = []
    for spec, role in wanted:
        encoder = ClipEncoder(spec, "cpu", store=store)
        folder = export_model(encoder, target, report=lambda line: log("  " + line))
        manifest = ExportManifest.read(folder)
        if manifest.extra.get("role") != role:
            manifest.extra["role"] = role
            manifest.write(folder)
        made.append({"name": folder.name, "role": role, "mb": _mb(folder)})
    return made


def requirement(name: str) -> str:
    """The pinned line of ``name`` in requirements-cpu.txt (``hnswlib==0.8.0``)."""
    for line in (PACKAGING / "requirements-cpu.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.split("==")[0].strip().lower() == name:
            return line
    raise SystemExit(f"{name} is not pinned in requirements-cpu.txt")


def build_hnswlib(level: str, out: Path, python: Path | str = sys.executable) -> Path:
    """hnswlib's wheel built from source for one x86-64 level (``x86-64-v2``), for the
    compiler's default target (``generic``), or for this machine (``native``: only for the
    comparison in bench/), into an emptied ``out``.

    hnswlib's setup.py adds -march=native unless HNSWLIB_NO_NATIVE is set; the level comes
    in through CFLAGS/CXXFLAGS, which distutils puts on every compiler line. pip's cache is
    off: a wheel cached from an earlier native build has the same name and would be taken.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CFLAGS", "CXXFLAGS")}
    env["PIP_NO_CACHE_DIR"] = "1"
    if level != "native":
        env["HNSWLIB_NO_NATIVE"] = "1"
    if level not in ("native", "generic"):
        env["CFLAGS"] = env["CXXFLAGS"] = f"-march={level} -mtune=generic"
    pip = [str(python), "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    pip += ["--no-deps", "--no-cache-dir", "--no-binary", "hnswlib", "-w", str(out)]
    run([*pip, requirement("hnswlib")], env=env)
    (wheel,) = out.glob("hnswlib-*.whl")
    return wheel


_EVEX = re.compile(r"%(zmm\d+|[xy]mm(1[6-9]|2\d|3[01])|k[0-7])\b")
_VEX = re.compile(r"^\s*[0-9a-f]+:\s+v\w+\s.*%[xy]mm", re.MULTILINE)


def simd_use(module: Path) -> dict[str, int]:
    """Instructions in a native module by the extension they need: ``avx512`` (zmm
    registers, xmm16-31/ymm16-31 or mask registers: only EVEX encodings have those) and
    ``avx`` (VEX-encoded, v-prefixed SIMD instructions, AVX-512's included)."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(module)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        "avx512": sum(1 for line in listing.splitlines() if _EVEX.search(line)),
        "avx": len(_VEX.findall(listing)),
    }


def check_level(module: Path, level: str) -> dict[str, int]:
    """Fail unless the module uses nothing beyond ``level``: no AVX-512 at all, and no
    AVX on x86-64-v2."""
    use = simd_use(module)
    if use["avx512"] or (level == BASELINE and use["avx"]):
        raise SystemExit(f"{module} has instructions beyond {level}: {use}")
    log(f"{module.name} for {level}: {use['avx512']} AVX-512, {use['avx']} AVX instructions")
    return use


def extension_of(wheel: Path, into: Path) -> Path:
    """Unpack a wheel's one native module into ``into``."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith((".so", ".pyd"))]
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        target = into / Path(name).name
        target.write_bytes(archive.read(name))
    return target


def built_here(site_packages: Path) -> list[str]:
    """Installed distributions whose wheel was built on this machine (a platform tag
    without a manylinux/musllinux/macOS/Windows baseline, e.g. ``linux_x86_64``)."""
    found = []
    for wheel_file in site_packages.glob("*.dist-info/WHEEL"):
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel_file.read_text().splitlines()
            if line.startswith("Tag:")
        ]
        if any(re.search(r"-linux_[a-z0-9_]+$", tag) for tag in tags):
            found.append(wheel_file.parent.name.split("-")[0].lower())
    return sorted(found)


def native_levels() -> list[str]:
    """The levels the bundle's own native code is built for: on x86-64 the baseline and
    x86-64-v3 (entry.py picks at start); elsewhere the compiler's generic target."""
    if platform.machine().lower() in ("x86_64", "amd64") and os.name != "nt":
        return [BASELINE, FAST]
    return ["generic"]  # HNSWLIB_NO_NATIVE alone: no -march at all


def build_venv(path: Path, variant: str) -> Path:
    """The cpu variant's venv has no torch; the gpu variant's has all of clipdesk's
    dependencies (torch with CUDA where pip picks that build). Only wheels built elsewhere
    for a stated baseline are installed (--only-binary :all:), except hnswlib, which has
    no wheels: it is built here for the baseline level (build_hnswlib), and for the faster
    level into ``path/native/LEVEL`` for the spec to add beside it."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = path / "requirements.stamp"
    wanted = variant + (PACKAGING / "requirements-cpu.txt").read_text()
    wanted += (REPO / "constraints.txt").read_text()
    wanted += f"native code: {native_levels()}, {inspect.getsource(build_hnswlib)}"
    if variant == "gpu":
        wanted += (REPO / "pyproject.toml").read_text()
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(path, ignore_errors=True)
    venv.create(path, with_pip=True)
    levels = native_levels()
    wheels = {level: build_hnswlib(level, path / "wheels" / level, python) for level in levels}
    for level, wheel in wheels.items():
        module = extension_of(wheel, path / "native" / level)
        if level != "generic":
            check_level(module, level)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    pip += ["--only-binary", ":all:", "-c", str(REPO / "constraints.txt")]
    pip += ["-r", str(PACKAGING / "requirements-cpu.txt"), str(wheels[levels[0]])]
    if variant == "gpu":
        pip.append(str(REPO))  # clipdesk's own dependencies: torch, open_clip, ...
    run(pip)
    shutil.rmtree(path / "native" / levels[0])  # installed in the venv itself
    site = next(path.glob("lib/python3*/site-packages"), path / "Lib" / "site-packages")
    here = [name for name in built_here(site) if name not in (*BUILT_HERE, "clipdesk")]
    if here:
        raise SystemExit(f"built on this machine, for this machine's CPU: {here}")
    stamp.write_text(wanted)
    return python


def check_bundle_native(app: Path) -> dict[str, dict[str, int]]:
    """The bundle's own native modules use nothing beyond their level."""
    internal = app / "_internal"
    found = {}
    for module in sorted(internal.glob("hnswlib*")):
        found[module.name] = check_level(module, BASELINE)
    for module in sorted(internal.glob("native/*/hnswlib*")):
        found[f"native/{module.parent.name}/{module.name}"] = check_level(
            module, module.parent.name
        )
    return found


def pyinstaller(python: Path, models: Path, name: str, variant: str) -> Path:
    env = dict(
        os.environ,
        CLIPDESK_BUILD_MODELS=str(models),
        CLIPDESK_BUILD_NATIVE=str(python.parent.parent / "native"),
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


def glibc_needed(app: Path) -> dict[str, str]:
    """The newest glibc symbol version that any program or library in the bundle asks for
    (what the bundle needs of a user's system; glibc itself is never bundled), and which."""
    newest: tuple[int, ...] = (0,)
    where = ""
    for path in sorted(app.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        dump = subprocess.run(
            ["objdump", "-p", str(path)], capture_output=True, text=True, check=False
        ).stdout
        for match in re.finditer(r"\bGLIBC_(\d+(?:\.\d+)+)\b", dump):
            version = tuple(int(x) for x in match.group(1).split("."))
            if version > newest:
                newest, where = version, path.relative_to(app).as_posix()
    return {"glibc": ".".join(map(str, newest)), "needed_by": where}


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
    if BASELINE in native_levels():
        report["native"] = {"levels": native_levels(), "simd": check_bundle_native(app)}
    if sys.platform.startswith("linux"):
        report["needs"] = glibc_needed(app)
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
