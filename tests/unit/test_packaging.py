"""Packaging: what a wheel carries, the app id the window gives the desktop, how the bundle
checks the CPU and how its native code is built and checked (packaging/build.py, cpu_check.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from clipdesk.cli.selftest import QUERIES
from tests.helpers import ROOT

PACKAGING = ROOT / "packaging"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"clipdesk_packaging_{name}", PACKAGING / name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clipdesk's wheel, built from a copy of the sources (the build writes beside them)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("clipdesk", "resources"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    shutil.copytree(ROOT / "tests" / "fixtures", source / "tests" / "fixtures", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    if importlib.util.find_spec("setuptools") is not None:  # else pip fetches it, slower
        pip.append("--no-build-isolation")
    proc = subprocess.run(
        [*pip, "--no-cache-dir", "-q", "-w", str(tmp / "out"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (tmp / "out").glob("clipdesk-*.whl")
    return built


def test_the_wheel_carries_the_code_the_icons_and_what_the_self_test_needs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "clipdesk").rglob("*.py")}
    assert code <= names, f"modules left out of the wheel: {sorted(code - names)}"
    assert "clipdesk/models/data/bpe_simple_vocab_16e6.txt.gz" in names
    assert "clipdesk/models/data/catalog_speeds.json" in names  # the catalog's measured speeds
    assert "clipdesk/resources/icons/clipdesk.svg" in names
    assert "clipdesk/resources/linux/io.github.clipdesk.Clipdesk.desktop" in names
    for part in ("clothing-clip.safetensors", "clothing-clip.json", "photos/LICENSE"):
        assert f"clipdesk/self_test_data/{part}" in names
    photos = [n for n in names if n.startswith("clipdesk/self_test_data/photos/")]
    for _query, folder in QUERIES:
        assert any(f"/photos/{folder}/" in n and n.endswith(".jpg") for n in photos), folder
    assert not any("clothing-test" in n for n in names)  # only what the self-test needs


def test_an_installed_wheel_finds_its_sample_photos_model_and_window_icon(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q"]
    proc = subprocess.run(
        [*pip, "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    probe = (
        "import clipdesk, clipdesk.cli.selftest as s\n"
        "from clipdesk.gui.app import application\n"
        "app = application(['clipdesk'])\n"
        "print(clipdesk.__file__)\n"
        "print(s.samples_dir())\n"
        "print(s.self_test_spec(__import__('pathlib').Path('.')).pretrained)\n"
        "print(app.windowIcon().isNull())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("CLIPDESK_SAMPLES", None)
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,  # not the repository: nothing may come from the source tree
    )
    assert proc.returncode == 0, proc.stderr
    module, samples, weights, no_icon = proc.stdout.split("\n")[:4]
    package = target / "clipdesk"
    assert Path(module).parent == package
    assert Path(samples) == package / "self_test_data" / "photos"
    assert Path(weights) == package / "self_test_data" / "clothing-clip.safetensors"
    assert no_icon == "False"


def test_the_window_names_the_desktop_entry_that_is_installed() -> None:
    """Wayland docks find a window's menu entry and icon by its desktop file name."""
    probe = (
        "from clipdesk.gui.app import application\n"
        "print(application(['clipdesk']).desktopFileName())\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip()
    assert (ROOT / "resources" / "linux" / f"{name}.desktop").is_file(), name
    install = (PACKAGING / "linux" / "install.sh").read_text()
    assert f"app_id={name}\n" in install  # the entry and icons are installed under that name


# The bundle's CPU check (packaging/cpu_check.py).

V2 = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
V3 = V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}


def test_a_cpu_below_the_baseline_gets_a_message_naming_what_it_lacks() -> None:
    entry = _load("cpu_check.py")
    core2 = {"pni", "ssse3", "cx16", "lahf_lm"}  # 2006-2008: no SSE4.2, no POPCNT
    message = entry.refuse_old_cpu(core2)
    assert message and "x86-64-v2" in message and "sse4_2" in message and "popcnt" in message
    assert entry.refuse_old_cpu(V2) is None
    assert entry.refuse_old_cpu(None) is None  # unreadable: let it try


def test_the_x86_64_v3_builds_are_chosen_only_where_the_cpu_has_avx2_and_fma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _load("cpu_check.py")
    (tmp_path / "native" / "x86-64-v3").mkdir(parents=True)
    fast = str(tmp_path / "native" / "x86-64-v3")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv(entry.LEVEL_ENV, raising=False)
    assert entry.choose_native_builds(str(tmp_path), V2 | {"avx"}) == "x86-64-v2"
    assert fast not in sys.path
    assert entry.choose_native_builds(str(tmp_path), V3) == "x86-64-v3"
    assert sys.path[0] == fast
    sys.path.remove(fast)
    monkeypatch.setenv(entry.LEVEL_ENV, "x86-64-v2")  # forced back to the baseline
    assert entry.choose_native_builds(str(tmp_path), V3) == "x86-64-v2"
    assert fast not in sys.path


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads /proc/cpuinfo")
def test_cpuid_agrees_with_the_kernel_on_the_features_that_matter() -> None:
    entry = _load("cpu_check.py")
    cpuid = entry._run_cpuid()
    if cpuid is None:
        pytest.skip("not x86-64, or no executable memory here")
    kernel = entry._proc_cpuinfo()
    wanted = set(entry.LEVELS["x86-64-v2"] + entry.LEVELS["x86-64-v3"]) | {"avx512f"}
    assert cpuid & wanted == kernel & wanted


# How the bundle's native code is built and checked (packaging/build.py).


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("objdump")), reason="gcc, objdump")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 code")
def test_the_instruction_check_finds_avx512_and_avx(tmp_path: Path) -> None:
    build = _load("build.py")
    source = tmp_path / "dot.c"
    source.write_text(
        "float dot(const float *a, const float *b, int n) {\n"
        "  float s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s; }\n"
    )

    def compiled(flags: str) -> Path:
        out = tmp_path / f"dot{len(flags)}.so"
        subprocess.run(
            ["gcc", "-O3", "-ffast-math", "-shared", "-fPIC", *flags.split(), "-o", out, source],
            check=True,
        )
        return out

    wide = compiled("-march=skylake-avx512 -mprefer-vector-width=512")
    assert build.simd_use(wide)["avx512"] > 0
    with pytest.raises(SystemExit, match="beyond x86-64-v3"):
        build.check_level(wide, "x86-64-v3")
    v3 = compiled("-march=x86-64-v3")
    assert build.simd_use(v3)["avx512"] == 0 and build.simd_use(v3)["avx"] > 0
    with pytest.raises(SystemExit, match="beyond x86-64-v2"):
        build.check_level(v3, "x86-64-v2")
    assert build.simd_use(compiled("-march=x86-64-v2")) == {"avx512": 0, "avx": 0}


def test_wheels_built_on_this_machine_are_told_from_portable_ones(tmp_path: Path) -> None:
    build = _load("build.py")
    tags = {
        "hnswlib-0.8.0": "cp311-cp311-linux_x86_64",  # built here by pip
        "numpy-2.4.6": "cp311-cp311-manylinux_2_27_x86_64\nTag: cp311-cp311-manylinux_2_28_x86_64",
        "ftfy-6.3.1": "py3-none-any",
    }
    for name, tag in tags.items():
        (tmp_path / f"{name}.dist-info").mkdir()
        (tmp_path / f"{name}.dist-info" / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
    assert build.built_here(tmp_path) == ["hnswlib"]
    assert build.requirement("hnswlib").startswith("hnswlib==")
