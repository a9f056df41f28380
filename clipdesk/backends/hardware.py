"""What the machine is, as the backends see it: the CPU's name and instruction sets (AVX-512,
native bf16), the cores a measurement runs on, and the signature a measured choice is
remembered under. Standard library at import; torch and OpenVINO only when asked."""

from __future__ import annotations

import ctypes
import functools
import platform
import subprocess
import sys

from clipdesk.throttle import usable_cores


@functools.cache  # read once: backends are rebuilt when the core limit changes
def cpu_has_avx512() -> bool:
    """Whether this x86 CPU has AVX-512 (False where that cannot be told, and on ARM)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    if sys.platform.startswith("linux"):
        return "avx512f" in (_cpuinfo("flags") or "").split()
    if sys.platform == "win32":
        avx512f = 41  # PF_AVX512F_INSTRUCTIONS_AVAILABLE (winnt.h)
        return bool(ctypes.windll.kernel32.IsProcessorFeaturePresent(avx512f))  # type: ignore[attr-defined,unused-ignore]
    if sys.platform == "darwin":
        try:
            found = subprocess.run(
                ["sysctl", "-n", "hw.optional.avx512f"], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return found.stdout.strip() == "1"
    return False


def cpu_has_native_bf16() -> bool:
    """Whether torch's CPU kernels run bfloat16 natively here (avx512_bf16 or AMX)."""
    import torch  # heavy: only when the backends are chosen

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        caps = capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_signature(device: str) -> str:
    """What a measured choice depends on: processor, its bf16/AMX support, library versions."""
    import torch  # heavy: only when the backends are chosen

    parts = [device, platform.machine(), cpu_name(), f"torch {torch.__version__}"]
    if device == "cpu":
        caps: dict[str, object] = dict(getattr(torch.cpu, "get_capabilities", dict)())
        flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx2") if caps.get(f)]
        parts.append("+".join(flags) or "baseline")
        parts.append(f"{torch.get_num_threads()} threads")
        try:
            import openvino  # heavy, and optional: only its version is read

            parts.append(f"openvino {openvino.get_version().split('-')[0]}")
        except ImportError:
            pass
    elif device == "cuda":
        parts.append(torch.cuda.get_device_name(0))
    return " | ".join(parts)


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` of /proc/cpuinfo (Linux); None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown cpu"


def asked_threads() -> int:
    """The cores the backends are measured on: torch's threads (OpenVINO's latency mode
    takes as many), or every usable core where torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(int(torch.get_num_threads()), 1)
    return usable_cores()
