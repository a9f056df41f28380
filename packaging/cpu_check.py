"""The bundle's CPU check: PyInstaller's first runtime hook (clipdesk.spec), so it runs before
any other hook or the entry point loads native code (Qt's runtime hook loads shiboken6, which
a Core 2 cannot run).

The bundle's own native code is built for x86-64-v2 (packaging/build.py), and numpy,
OpenVINO and Qt need as much. On an older CPU this says so and exits with status 3 instead of
dying of an illegal instruction. Where the bundle also carries builds for x86-64-v3 (AVX2,
FMA) and the CPU has it, those come first on ``sys.path``. The features are read with the
CPUID instruction itself (what the CPU, or an emulator, reports), falling back to
/proc/cpuinfo where code cannot be run from memory. Only the standard library is used.
"""

from __future__ import annotations

import os
import platform
import sys

LEVEL_ENV = "CLIPDESK_CPU_LEVEL"  # x86-64-v2: use the baseline builds even on a newer CPU
CHOICE_ENV = "CLIPDESK_NATIVE_BUILDS"  # what was chosen, for --self-test to report
BASELINE = "x86-64-v2"
LEVELS: dict[str, tuple[str, ...]] = {
    # /proc/cpuinfo's names; pni is SSE3, abm includes LZCNT.
    "x86-64-v2": ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"),
    "x86-64-v3": ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"),
}
# (leaf, register, bit) of each feature in CPUID.
_CPUID_BITS = {
    "pni": (1, "ecx", 0),
    "ssse3": (1, "ecx", 9),
    "fma": (1, "ecx", 12),
    "cx16": (1, "ecx", 13),
    "sse4_1": (1, "ecx", 19),
    "sse4_2": (1, "ecx", 20),
    "movbe": (1, "ecx", 22),
    "popcnt": (1, "ecx", 23),
    "xsave": (1, "ecx", 26),
    "osxsave": (1, "ecx", 27),
    "avx": (1, "ecx", 28),
    "f16c": (1, "ecx", 29),
    "bmi1": (7, "ebx", 3),
    "avx2": (7, "ebx", 5),
    "bmi2": (7, "ebx", 8),
    "avx512f": (7, "ebx", 16),
    "lahf_lm": (0x80000001, "ecx", 0),
    "abm": (0x80000001, "ecx", 5),
}
# System V x86-64: cpuid(leaf=edi, subleaf=esi, out=rdx) stores eax, ebx, ecx, edx.
_CPUID_CODE = bytes.fromhex("53 89f8 89f1 4989d0 0fa2 418900 41895804 41894808 4189500c 5b c3")
# xgetbv(ecx=edi) -> edx:eax in rax.
_XGETBV_CODE = bytes.fromhex("89f9 0f01d0 48c1e220 4809d0 c3")


def _run_cpuid() -> set[str] | None:
    """The features CPUID reports, with AVX and AVX-512 only where the OS saves their
    registers (XGETBV); None where this cannot be run (not x86-64, no executable memory)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or os.name == "nt":
        return None
    import ctypes
    import mmap

    try:
        memory = mmap.mmap(
            -1,
            mmap.PAGESIZE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
        )
    except (OSError, ValueError, AttributeError):  # W^X policies refuse executable memory
        return None
    memory.write(_CPUID_CODE + _XGETBV_CODE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    regs_type = ctypes.c_uint32 * 4
    cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(regs_type))(
        base
    )
    xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(base + len(_CPUID_CODE))

    def leaf(number: int) -> dict[str, int]:
        out = regs_type()
        cpuid(number, 0, ctypes.byref(out))
        return dict(zip(("eax", "ebx", "ecx", "edx"), out, strict=True))

    highest, highest_ext = leaf(0)["eax"], leaf(0x80000000)["eax"]
    leaves = {number: leaf(number) for number in (1, 7) if number <= highest}
    if highest_ext >= 0x80000001:
        leaves[0x80000001] = leaf(0x80000001)
    found = {
        name
        for name, (number, register, bit) in _CPUID_BITS.items()
        if number in leaves and leaves[number][register] >> bit & 1
    }
    xcr0 = xgetbv(0) if "osxsave" in found else 0
    if xcr0 & 0b110 != 0b110:  # the OS does not save the ymm registers
        found -= {"avx", "avx2", "fma", "f16c", "avx512f"}
    if xcr0 & 0b11100000 != 0b11100000:
        found.discard("avx512f")
    return found


def _proc_cpuinfo() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_features() -> set[str] | None:
    """This CPU's features by /proc/cpuinfo's names, or None where they cannot be read."""
    try:
        found = _run_cpuid()
    except Exception:  # a check must not be what crashes the app
        found = None
    return found if found is not None else _proc_cpuinfo()


def missing(features: set[str], level: str) -> list[str]:
    """What ``level`` needs that ``features`` lack (the levels below it included)."""
    wanted: list[str] = []
    for name, needs in LEVELS.items():
        wanted += needs
        if name == level:
            break
    return [f for f in wanted if f not in features]


def choose_native_builds(root: str, features: set[str] | None) -> str:
    """Put the fastest builds this CPU runs on sys.path; returns their level."""
    chosen = BASELINE
    forced = os.environ.get(LEVEL_ENV)
    for level in LEVELS:
        folder = os.path.join(root, "native", level)
        usable = features is not None and not missing(features, level)
        if level != BASELINE and os.path.isdir(folder) and usable and forced != BASELINE:
            sys.path.insert(0, folder)
            chosen = level
    return chosen


def refuse_old_cpu(features: set[str] | None) -> str | None:
    """The message for a CPU below the baseline, or None."""
    if features is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    lacking = missing(features, BASELINE)
    if not lacking:
        return None
    names = {"pni": "sse3", "lahf_lm": "lahf", "cx16": "cmpxchg16b"}
    return (
        "clipdesk: this CPU is too old for this build of clipdesk. It needs an x86-64 CPU "
        f"of level {BASELINE} (SSE4.2 and POPCNT: Intel Core i3/i5/i7 from 2008 on, AMD from "
        "2011 on, any Intel Atom/Celeron/Pentium from 2013 on); this one lacks: "
        + ", ".join(names.get(f, f) for f in lacking)
        + ". Nothing was changed."
    )


def _runtime_hook() -> None:
    features = cpu_features()
    refusal = refuse_old_cpu(features)
    if refusal:
        print(refusal, file=sys.stderr)
        raise SystemExit(3)
    root = getattr(sys, "_MEIPASS", None) or os.path.dirname(sys.executable)
    os.environ[CHOICE_ENV] = choose_native_builds(root, features)


if __name__ == "__main__" and getattr(sys, "frozen", False):  # run as the runtime hook
    _runtime_hook()
