"""Shared helpers of the benchmark scripts: machine description and data location.

Benchmarks print figures; they assert nothing and are not part of the test suite.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# The export after a model's first full index (a minute for ViT-B-32, once) would land inside
# the timed runs; bench_startup.py exports explicitly where it measures the effect.
os.environ.setdefault("CLIPDESK_AUTO_EXPORT", "0")

REPO = Path(__file__).resolve().parent.parent
DATA = (REPO.parent / "shared" / "data").resolve()

_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)


def cold_start_env(**extra: str) -> dict[str, str]:
    """The environment for a timed cold start of clipdesk: Python caches compiled modules,
    as on a user's machine (pip compiles an install; an editable one writes its cache on the
    first start). Some machines here set PYTHONDONTWRITEBYTECODE=1, which made every timed
    start compile clipdesk's own sources."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONWARNINGS": "ignore", **extra}


def clothing_photos(count: int) -> list[Path]:
    """The first ``count`` photos of ../shared/data/clothing-small, or where it has fewer
    (or is absent), the 372 committed test photos."""
    source = DATA / "clothing-small"
    files = sorted(source.rglob("*.jpg")) if source.is_dir() else []
    if len(files) < count:
        files = sorted((REPO / "tests" / "fixtures" / "clothing-test").rglob("*.jpg"))
    return files[:count]


def cpu_model() -> str:
    from clipdesk.backends.hardware import cpu_name

    return cpu_name()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [f for f in _FLAGS_OF_INTEREST if f in present]
    except OSError:
        pass
    return []


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def print_machine(title: str, torch_threads: bool = True) -> None:
    print(f"== {title} ==")
    print(f"python    : {sys.version.split()[0]} ({platform.platform()})")
    print(f"cpu       : {cpu_model()}")
    print(f"flags     : {' '.join(cpu_flags()) or '(none of interest)'}")
    print(f"cores     : {usable_cores()} usable (os.cpu_count()={os.cpu_count()})")
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            total_kb = int(fh.readline().split()[1])
        print(f"memory    : {total_kb / 2**20:.1f} GiB")
    except (OSError, ValueError, IndexError):
        pass
    if torch_threads:
        import torch

        print(
            f"torch     : {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
            f"{torch.get_num_interop_threads()} inter-op threads"
        )
    print(flush=True)


def require_data(*parts: str) -> Path | None:
    """The data folder (or a folder under it), or None after printing why it is skipped."""
    path = DATA.joinpath(*parts)
    if not path.is_dir():
        print(
            f"SKIPPED: benchmark data not found at {path} "
            "(expected ../shared/data next to the repository)"
        )
        return None
    return path


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class LoadMonitor:
    """CPU used by OTHER processes while a block ran, in cores (0 = a quiet machine).

    The machine's busy time from /proc/stat minus this process's own CPU time; a
    benchmark figure taken while another job used a core is not comparable.
    """

    def __init__(self) -> None:
        self.foreign_cores = float("nan")
        self.steal_frac = float("nan")
        self.wall_s = 0.0

    def __enter__(self) -> LoadMonitor:
        import time

        self._t = time.perf_counter()
        self._own = sum(os.times()[:4])
        try:
            self._busy, self._total = _busy_jiffies()
            self._steal = _steal()
        except (OSError, ValueError, IndexError):
            self._busy = -1
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        self.wall_s = time.perf_counter() - self._t
        own = sum(os.times()[:4]) - self._own
        if self._busy < 0 or self.wall_s <= 0:
            return
        busy, total = _busy_jiffies()
        hz = os.sysconf("SC_CLK_TCK")
        busy_s = (busy - self._busy) / hz
        self.foreign_cores = max(0.0, (busy_s - own) / self.wall_s)
        if total > self._total:
            self.steal_frac = (_steal() - self._steal) / (total - self._total)

    def describe(self) -> str:
        if not self.wall_s >= 0.5:
            return "load: too short to tell"
        return (
            f"other processes used {self.foreign_cores:.2f} cores on average "
            f"(steal {self.steal_frac:.1%})"
        )


def _steal() -> int:
    with open("/proc/stat", encoding="utf-8") as fh:
        fields = fh.readline().split()[1:]
    return int(fields[7]) if len(fields) > 7 else 0


def warm_page_cache(paths: object) -> int:
    """Read every file once, so the first timed pass does not pay for the disk."""
    total = 0
    for p in paths:  # type: ignore[attr-defined]
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return total


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15, window_s: float = 2.0) -> float:
    """Wait until other processes use under ``threshold`` cores over ``window_s``.

    Returns the seconds waited (gives up after ``max_wait_s``; 0 disables the wait).
    A shared machine only ever makes a measurement slower, never faster.
    """
    import time

    if max_wait_s <= 0:
        return 0.0
    start = time.perf_counter()
    while True:
        with LoadMonitor() as mon:
            time.sleep(window_s)
        if not mon.foreign_cores >= threshold:  # quiet, or /proc/stat unreadable
            return time.perf_counter() - start
        if time.perf_counter() - start > max_wait_s:
            print(
                f"  (machine still busy after {max_wait_s:.0f} s: {mon.describe()}; "
                "measuring anyway)",
                flush=True,
            )
            return time.perf_counter() - start
