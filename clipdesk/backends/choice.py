"""Image-encoder backends: the same CLIP image tower run the fastest faithful way.

A plain fp32 torch loop leaves most of a modern CPU unused: CPUs with avx512_bf16 or AMX
run bfloat16 matrix products natively, and OpenVINO fuses the whole graph. Which is fastest
differs from machine to machine, so clipdesk measures the candidates once per model and
machine, keeps only the *faithful* ones (every embedding within cosine 0.999 of the fp32
reference), picks the fastest and remembers the choice (``backends.json`` in the models
folder). Vectors from a faithful backend are the same model's vectors: they mix safely.

Backends take a preprocessed float32 batch (N, 3, H, W) and return unnormalised features.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipdesk.errors import ClipdeskError
from clipdesk.progress import CancelToken
from clipdesk.spec import ModelSpec
from clipdesk.throttle import usable_cores

log = logging.getLogger(__name__)

FAITHFUL_COSINE = 0.999
FAITHFUL_AGREEMENT = 0.95  # share of queries whose top-10 neighbours are exactly the same
WIDEN_F16_ENV = "CLIPDESK_WIDEN_F16"  # "0"/"1": keep or widen an export's fp16 weights
BACKEND_ENV = "CLIPDESK_BACKEND"  # force one (e.g. torch-fp32) instead of measuring
# What ``index --backend`` and the override setting accept ("auto": measure and choose).
BACKEND_NAMES = (
    "auto",
    "torch-fp32",
    "torch-bf16",
    "torch-fp16",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-fp32-streams",
    "openvino-bf16-streams",
)
CHOICES_FILE = "backends.json"
# 2: each choice also records the load it was measured under (a version 1 file is still read:
# its choices count as measured undisturbed) and whether it is provisional.
_CHOICE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
# A choice measured while other programs took cores it needed is measured again at the next
# index, this many times in all at most: an always-busy machine keeps its last pick.
MEASUREMENTS_UNDER_LOAD = 3


class BackendUnavailable(ClipdeskError):
    """This backend cannot run here (a missing package, an unsupported device)."""


class MeasurementCancelled(ClipdeskError):
    """The user stopped the measurement: nothing was chosen, nothing is remembered."""


# done, total (photo encodings), what runs now
StepReport = Callable[[int, int, str], None]
# Given the reference backend's raw features of the probe photos, in the probe's order.
ReferenceVectors = Callable[[np.ndarray], None]


@dataclass(frozen=True)
class Watch:
    """What a running measurement checks between runs (``cancel``) and tells (``report``).
    Set around ``select_backend`` by the service (:func:`watched`), so that both encoders'
    measurements obey it without a parameter through every layer."""

    cancel: CancelToken | None = None
    report: StepReport | None = None
    remeasure: bool = False  # measure again whatever is remembered (index --remeasure)
    retry_provisional: bool = False  # a choice measured under load may be measured again


_watching: contextvars.ContextVar[Watch | None] = contextvars.ContextVar(
    "clipdesk_measure", default=None
)


def current_watch() -> Watch:
    """What the measurement running in this context obeys (:func:`watched`)."""
    return _watching.get() or Watch()


@contextlib.contextmanager
def watched(
    cancel: CancelToken | None, report: StepReport | None = None, remeasure: bool = False
) -> Iterator[None]:
    """Measurements in this context (an index) stop at ``cancel`` and report their steps.
    In it, a remembered choice that was measured under load is measured again (see
    :data:`MEASUREMENTS_UNDER_LOAD`), and with ``remeasure`` any remembered choice is."""
    token = _watching.set(Watch(cancel, report, remeasure, retry_provisional=True))
    try:
        yield
    finally:
        _watching.reset(token)


def stop_if_cancelled(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise MeasurementCancelled("the encoder backend measurement was cancelled")


class ImageBackend:
    name = "base"
    description = ""
    takes_tensors = False  # numpy batches only

    def encode(self, batch: Any) -> np.ndarray:
        raise NotImplementedError


class TorchBackend(ImageBackend):
    """open_clip's visual tower in torch, in fp32, bf16 (CPU) or fp16 (CUDA/MPS)."""

    def __init__(self, model: Any, device: str, precision: str) -> None:
        import torch

        self.device = device
        self.precision = precision
        self.name = f"torch-{precision}"
        self.description = f"{precision} via torch"
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            precision
        ]
        visual = model.visual
        if next(visual.parameters()).dtype != self.dtype:
            # A private copy in this precision: the model's own tower stays for the reference
            # and text. (fp32 from a CUDA model that was loaded in fp16 gets an fp32 copy.)
            visual = copy.deepcopy(visual).to(self.dtype)
        from clipdesk.backends.towers import class_token_tower  # imports torch and open_clip

        self.visual = class_token_tower(visual.eval())

    takes_tensors = True  # a torch tensor may come in, already on the device

    def encode(self, batch: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.as_tensor(batch)
            if self.device == "cuda" and not tensor.is_cuda:
                # Page-locked memory: the copy to the GPU runs by DMA, asynchronously.
                tensor = tensor.pin_memory()
            tensor = tensor.to(self.device, self.dtype, non_blocking=True)
            features = self.visual(tensor).float()
        return np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)


@functools.cache  # read once: backends are rebuilt when the core limit changes
def cpu_has_avx512() -> bool:
    """Whether this x86 CPU has AVX-512 (False where that cannot be told, and on ARM)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    if sys.platform.startswith("linux"):
        return "avx512f" in (_cpuinfo("flags") or "").split()
    if sys.platform == "win32":
        import ctypes

        avx512f = 41  # PF_AVX512F_INSTRUCTIONS_AVAILABLE (winnt.h)
        return bool(ctypes.windll.kernel32.IsProcessorFeaturePresent(avx512f))  # type: ignore[attr-defined,unused-ignore]
    if sys.platform == "darwin":
        import subprocess

        try:
            found = subprocess.run(
                ["sysctl", "-n", "hw.optional.avx512f"], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return found.stdout.strip() == "1"
    return False


def widens_f16_weights() -> bool:
    """Whether an f32 OpenVINO model's fp16 weights (an export's) are widened to f32 before
    compiling. Without AVX-512, OpenVINO's CPU plugin converts them at every product: 20 %
    slower on an AVX2 Zen 3 (bench/README.md) for 360 MB less memory. With AVX-512 (Zen 4)
    the two ran level, so the weights stay as they are. $CLIPDESK_WIDEN_F16=0/1 overrides."""
    setting = os.environ.get(WIDEN_F16_ENV)
    if setting in ("0", "1"):
        return setting == "1"
    return not cpu_has_avx512()


def widen_f16_weights(model: Any) -> int:
    """Replace ``model``'s fp16 weight constants (each read through a Convert to f32) by f32
    constants, in place; the values are the same (every fp16 number is exact in f32).
    Returns how many were widened."""
    import openvino as ov
    import openvino.opset13 as ops

    widened = 0
    for node in model.get_ops():
        if node.get_type_name() != "Convert" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        source = node.input_value(0).get_node()
        if source.get_type_name() == "Constant" and source.get_element_type() == ov.Type.f16:
            wide = ops.constant(source.get_data().astype(np.float32))
            node.output(0).replace(wide.output(0))
            widened += 1
    return widened


class OpenVinoBackend(ImageBackend):
    """The image tower exported to ONNX and compiled by OpenVINO for the CPU.

    ``streams``: OpenVINO's throughput mode: each batch is split over parallel infer
    requests, one stream of cores each, instead of all cores on one request. On 2 cores it
    measured within noise of one request (bench/README.md), so it is not a candidate of the
    automatic choice; ``--backend openvino-fp32-streams`` and bench_backends.py use it."""

    def __init__(
        self, onnx_file: Path, precision: str, threads: int | None = None, streams: bool = False
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("OpenVINO is not installed") from exc
        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "bf16" and "BF16" not in capabilities:
            raise BackendUnavailable("this CPU has no native bf16 for OpenVINO")
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            # LATENCY puts every core on one request. THROUGHPUT splits the cores into
            # streams, which only parallel requests fill: with one synchronous request it
            # halved the speed on 2 cores (bench/README.md), so streams mean split batches.
            "PERFORMANCE_HINT": "THROUGHPUT" if streams else "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(onnx_file))
        # an export's fp16 weights, where that is faster (see widens_f16_weights)
        widen = precision == "fp32" and widens_f16_weights()
        self.widened = widen_f16_weights(model) if widen else 0
        self.compiled = core.compile_model(model, "CPU", config)
        count = int(self.compiled.get_property("NUM_STREAMS")) if streams else 1
        self.requests = [self.compiled.create_infer_request() for _ in range(max(count, 1))]
        self._lock = threading.Lock()
        self.precision = precision
        version = ov.get_version().split("-")[0]
        self.name = f"openvino-{precision}" + ("-streams" if streams else "")
        self.description = f"{precision} via OpenVINO {version}" + (
            f", {len(self.requests)} streams" if streams else ""
        )

    def encode(self, batch: Any) -> np.ndarray:
        array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        parts = np.array_split(array, min(len(self.requests), len(array)) or 1)
        with self._lock:  # the requests are this backend's: calls from two threads take turns
            if len(parts) == 1:
                out = next(iter(self.requests[0].infer({0: array}).values()))
                return np.array(out, dtype=np.float32)
            for request, part in zip(self.requests, parts, strict=False):
                request.start_async({0: np.ascontiguousarray(part)})
            for request in self.requests[: len(parts)]:
                request.wait()
            outputs = [r.get_output_tensor(0).data for r in self.requests[: len(parts)]]
            return np.concatenate(outputs, dtype=np.float32)  # a copy: requests reuse them


def openvino_backend(name: str, model_file: Path, threads: int | None = None) -> OpenVinoBackend:
    """The OpenVINO backend a name says: ``openvino-fp32``, ``openvino-bf16-streams``..."""
    precision, _, mode = name.removeprefix("openvino-").partition("-")
    if precision not in ("fp32", "bf16") or mode not in ("", "streams"):
        raise BackendUnavailable(f"no OpenVINO backend is called {name!r}")
    return OpenVinoBackend(model_file, precision, threads=threads, streams=mode == "streams")


# -- choosing --------------------------------------------------------------------------


def cpu_has_native_bf16() -> bool:
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        caps = capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_signature(device: str) -> str:
    """What a measured choice depends on: processor, its bf16/AMX support, library versions."""
    import torch

    parts = [device, platform.machine(), cpu_name(), f"torch {torch.__version__}"]
    if device == "cpu":
        caps: dict[str, Any] = dict(getattr(torch.cpu, "get_capabilities", dict)())
        flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx2") if caps.get(f)]
        parts.append("+".join(flags) or "baseline")
        parts.append(f"{torch.get_num_threads()} threads")
        try:
            import openvino

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


@dataclass
class Measurement:
    name: str
    description: str
    images_per_s: float
    min_cosine: float
    faithful: bool
    error: str = ""
    top10_agreement: float = 1.0
    # The load while it was timed (None: not timed, or not known on this system), in cores:
    own_cores: float | None = None  # this process's CPU seconds per second
    other_cores: float | None = None  # everything else's, hypervisor steal included
    stolen: float | None = None  # share of the cores it asked for that others took


@dataclass
class BackendChoice:
    name: str
    reason: str  # one line for `status`: "cpu: bf16 via torch, 2.6x fp32 measured"
    measurements: list[Measurement]
    # Measured while other programs took cores it needed, so that a different pick may
    # have won: measured again at a later index (see MEASUREMENTS_UNDER_LOAD).
    provisional: bool = False
    tries: int = 0  # measurements under load in a row, this one included


def measure_again(choice: BackendChoice) -> bool:
    """Whether an index measures ``choice`` again: it was measured under load, fewer than
    MEASUREMENTS_UNDER_LOAD times in a row."""
    return choice.provisional is True and choice.tries < MEASUREMENTS_UNDER_LOAD


def fixed_backend(setting: str | None) -> str | None:
    """The backend a setting (or $CLIPDESK_BACKEND) fixes, which nothing measures; None
    when the backends are measured ("auto")."""
    name = setting or os.environ.get(BACKEND_ENV) or None
    return None if name in (None, "auto") else name


# A candidate, built when it is measured; it may carry ``backend_name`` and
# ``skip_if_faithful`` attributes (see :func:`measure`).
BackendFactory = Callable[[], ImageBackend]


class Chooser(Protocol):
    """What :func:`choose` asks of an encoder: :class:`clipdesk.models.encoder.ClipEncoder` (torch)
    and :class:`clipdesk.models.exported.ExportedEncoder` (an export) are both one."""

    device: str
    image_size: int
    backend_choice: BackendChoice | None

    @property
    def spec(self) -> ModelSpec: ...
    @property
    def choices_dir(self) -> Path | None: ...  # where choices are remembered; None: nowhere
    @property
    def backend_lock(self) -> threading.Lock: ...
    @property
    def image_backend(self) -> ImageBackend: ...  # the reference, until a choice is made
    def machine(self) -> str: ...  # what a measured choice depends on
    def takes_override(self, name: str) -> bool: ...  # False: measured instead
    def unmeasured_reason(self, reference: ImageBackend) -> str: ...  # no candidate here
    def _backend_candidates(self, built: dict[str, ImageBackend]) -> list[BackendFactory]: ...
    def adopt(self, name: str, built: ImageBackend | None) -> None: ...  # use the chosen one


def choose(
    encoder: Chooser,
    override: str | None = None,
    seconds: float = 2.0,
    probe: np.ndarray | None = None,
    on_reference: ReferenceVectors | None = None,
) -> BackendChoice:
    """The encoder's image backend: the fastest faithful one for its model on this machine,
    measured once and remembered in its choices folder, or ``override`` (a backend name, or
    $CLIPDESK_BACKEND). Under the encoder's lock: a second caller waits for the first's
    choice instead of measuring again. ``probe``: preprocessed photos to judge fidelity on
    (the user's own, ideally). ``on_reference``: given the probe's features from the
    reference pass, if one runs (as unit rows, they are the vectors the reference backend
    stores: the caller can keep them). The encoder then uses the chosen backend."""
    with encoder.backend_lock:
        if encoder.backend_choice is not None:
            return encoder.backend_choice
        override = override or os.environ.get(BACKEND_ENV) or None
        if override and not encoder.takes_override(override):
            override = None
        machine = encoder.machine()
        folder = encoder.choices_dir
        store = ChoiceStore(folder) if folder is not None else None
        built: dict[str, ImageBackend] = {}  # the backends measured; the chosen one is kept
        if override and override != "auto":
            choice = BackendChoice(
                override, f"{encoder.device}: {override} (chosen by setting)", []
            )
        elif store is not None and (known := store.get(encoder.spec.key, machine)) is not None:
            choice = known
        else:
            reference = encoder.image_backend
            candidates = encoder._backend_candidates(built)
            if not candidates:  # nothing measured, nothing remembered
                choice = BackendChoice(reference.name, encoder.unmeasured_reason(reference), [])
            else:
                batch = probe if probe is not None else probe_images(encoder.image_size)
                measured = measure(reference, candidates, batch, seconds, on_reference=on_reference)
                choice = decide(encoder.device, measured)
                if store is not None:
                    store.put(encoder.spec.key, machine, choice)
        # as measured, not built again (an OpenVINO compile is 2 s on 2 cores)
        encoder.adopt(choice.name, built.get(choice.name))
        encoder.backend_choice = choice
        return choice


# -- the load a measurement ran under ----------------------------------------------------


def _ticks_per_s() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def _busy_ticks() -> tuple[int, int] | None:
    """(busy ticks of all CPUs together, number of CPUs) from /proc/stat, or None where
    there is none (not Linux). Busy: user, nice, system, irq, softirq, and steal (the time a
    hypervisor gave this virtual machine's CPUs to others); guest time is within user."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = fh.read().splitlines()
        values = lines[0].split()
        if values[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[1:9])
    except (OSError, IndexError, ValueError):
        return None
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    return user + nice + system + irq + softirq + steal, max(cpus, 1)


def _own_cpu_seconds() -> float:
    times = os.times()  # all of this process's threads (OpenVINO's and torch's teams)
    return times.user + times.system


def asked_threads() -> int:
    """The cores the backends are measured on: torch's threads (OpenVINO's latency mode
    takes as many), or every usable core where torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(int(torch.get_num_threads()), 1)
    return usable_cores()


class LoadMeter:
    """The CPU time of this process and of everything else over the spans it times."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or asked_threads()
        self.wall = 0.0
        self.own = 0.0
        self.others: float | None = 0.0  # None: not known here
        self.cpus = 0
        self.unsure_ticks = 0

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        wall, own, busy = time.monotonic(), _own_cpu_seconds(), _busy_ticks()
        try:
            yield
        finally:
            own = _own_cpu_seconds() - own
            after = _busy_ticks()
            self.wall += time.monotonic() - wall
            self.own += own
            if busy is None or after is None or self.others is None:
                self.others = None
            else:
                self.others += max(0.0, (after[0] - busy[0]) / _ticks_per_s() - own)
                self.cpus = after[1]
                # Each CPU's counter, and each of our threads' times, is read to a tick.
                self.unsure_ticks += after[1] + self.threads + 1

    def stolen(self) -> float | None:
        """The share of the cores we asked for (``threads``) that other programs surely
        took, 0..1: their use beyond the cores we left idle, less what the tick counters
        cannot tell apart. (Others' use of cores we did not ask for costs us nothing; that
        of ours slows a CPU-bound team by about that share.) None where not known."""
        if self.others is None or self.wall <= 0:
            return None
        cpus = max(self.cpus, self.threads)
        threads = min(self.threads, cpus)
        taken = max(0.0, self.others / self.wall - (cpus - threads)) / threads
        unsure = self.unsure_ticks / (_ticks_per_s() * self.wall * threads)
        return min(1.0, max(0.0, taken - unsure))

    def noted(self, measurement: Measurement) -> Measurement:
        if self.wall > 0:
            measurement.own_cores = round(self.own / self.wall, 3)
            if self.others is not None:
                measurement.other_cores = round(self.others / self.wall, 3)
            stolen = self.stolen()
            measurement.stolen = None if stolen is None else round(stolen, 4)
        return measurement


def probe_images(image_size: int, count: int = 16, seed: int = 0) -> np.ndarray:
    """Photo-like test inputs: smooth colour fields with edges and texture (as normalised
    model input), so a backend is judged on more than white noise."""
    rng = np.random.default_rng(seed)
    size = image_size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        channels = []
        for _c in range(3):
            a, b, c, d = rng.uniform(-3, 3, 4)
            field = np.sin(a * xs + b * ys + c) * np.cos(d * xs * ys * 4)
            field += (xs > rng.uniform(0.2, 0.8)).astype(np.float32) * rng.uniform(-1, 1)
            field += rng.normal(0, 0.15, (size, size)).astype(np.float32)
            channels.append(field)
        images.append(np.stack(channels))
    return np.asarray(images, dtype=np.float32)


def unit_rows(features: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows: the vectors clipdesk stores and compares."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit: np.ndarray = (features / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of ``a`` with the same row of ``b``."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)  # type: ignore[no-any-return]


def top10_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Share of rows whose k nearest other rows are the same set under both encodings."""
    n = len(reference)
    k = min(k, n - 2)
    if k < 1:
        return 1.0
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    got = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    same = 0
    for i in range(n):
        ref_top = set(np.argsort(-(ref @ ref[i]))[1 : k + 1].tolist())
        got_top = set(np.argsort(-(got @ got[i]))[1 : k + 1].tolist())
        same += ref_top == got_top
    return same / n


def _speed(
    backend: ImageBackend,
    batch: np.ndarray,
    seconds: float,
    cancel: CancelToken | None = None,
    meter: LoadMeter | None = None,
) -> float:
    backend.encode(batch[:2])  # warm-up: first-call allocations and kernel choices
    done, started = 0, time.perf_counter()
    with meter.span() if meter is not None else contextlib.nullcontext():
        while True:
            stop_if_cancelled(cancel)
            backend.encode(batch)
            done += len(batch)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and done >= 2 * len(batch):
                return done / elapsed


TIMING_BATCH = 32  # speed is timed on batches of the size the pipeline uses


def _encode_timed(
    backend: ImageBackend,
    batch: np.ndarray,
    cancel: CancelToken | None = None,
    step: Callable[[int], None] | None = None,
    meter: LoadMeter | None = None,
) -> tuple[np.ndarray, float | None]:
    """Vectors of all of ``batch`` and images/s. The fidelity pass is the timing: it runs
    in batches of TIMING_BATCH, and all full batches after the first (the warm-up) are
    timed, which spares a first index 2-3 s per backend. None: too few photos for that
    (under 3 timed batches); :func:`_speed` then times it apart. ``cancel`` is checked
    before each batch, ``step`` told the photos of each one done; ``meter`` notes the load
    over the whole pass."""
    parts, done, elapsed = [], 0, 0.0
    with meter.span() if meter is not None else contextlib.nullcontext():
        for i in range(0, len(batch), TIMING_BATCH):
            stop_if_cancelled(cancel)
            chunk = batch[i : i + TIMING_BATCH]
            started = time.perf_counter()
            parts.append(backend.encode(chunk))
            if step is not None:
                step(len(chunk))
            if i > 0 and len(chunk) == TIMING_BATCH:
                elapsed += time.perf_counter() - started
                done += len(chunk)
    vectors = np.concatenate(parts)
    return vectors, (done / elapsed if done >= 3 * TIMING_BATCH and elapsed > 0 else None)


def measure(
    reference: ImageBackend,
    candidates: list[Callable[[], ImageBackend]],
    batch: np.ndarray,
    seconds: float = 2.0,
    on_reference: ReferenceVectors | None = None,
    cancel: CancelToken | None = None,
    report: StepReport | None = None,
) -> list[Measurement]:
    """Speed and fidelity of each candidate against the fp32 reference: fidelity on all of
    ``batch`` (the probe photos), speed from that same pass (see :func:`_encode_timed`), or
    on batches of TIMING_BATCH for about ``seconds`` when the probe is small.

    A factory with a ``skip_if_faithful`` attribute (the name of a candidate before it) is
    not measured when that one was faithful: e.g. OpenVINO fp32 against a faithful OpenVINO
    bf16 on a CPU with native bf16, measured at half its speed (bench/README.md), where
    measuring it cost 15 s of a first index. A wrong skip costs speed, never fidelity.

    ``on_reference`` is given the reference's features of ``batch`` before any candidate
    runs: a first index stores them, so its reference pass is not thrown away.

    ``cancel`` (default: the :func:`watched` one) is checked before every batch and between
    runs: :class:`MeasurementCancelled` then, within a batch's time. ``report`` is told
    (done, total, what runs) after each batch, in photo encodings over all backends."""
    watch = current_watch()
    cancel = cancel if cancel is not None else watch.cancel
    report = report if report is not None else watch.report
    steps = {"done": 0, "total": len(batch) * (1 + len(candidates))}
    running = [reference.name]

    def step(count: int) -> None:
        steps["done"] += count
        if report is not None:
            report(steps["done"], steps["total"], f"measuring {running[0]}")

    timing = batch[:TIMING_BATCH]
    threads = asked_threads()
    meter = LoadMeter(threads)  # each backend's load apart: it may come and go
    expected, speed = _encode_timed(reference, batch, cancel, step, meter)
    if on_reference is not None:
        on_reference(expected)
    if speed is None:
        speed = _speed(reference, timing, seconds, cancel, meter)
    results = [meter.noted(Measurement(reference.name, reference.description, speed, 1.0, True))]
    for make in candidates:
        stop_if_cancelled(cancel)
        name = getattr(make, "backend_name", "?")
        running[0] = name
        sibling = getattr(make, "skip_if_faithful", None)
        if sibling and any(m.name == sibling and m.faithful for m in results):
            steps["total"] -= len(batch)
            results.append(
                Measurement(name, "", 0.0, 0.0, False, f"not measured: {sibling} is faithful")
            )
            continue
        before = steps["done"]
        try:
            if report is not None:  # building one may take a while (an export, a compile)
                report(steps["done"], steps["total"], f"preparing {name}")
            backend = make()
            meter = LoadMeter(threads)
            got, speed = _encode_timed(backend, batch, cancel, step, meter)
            cosine = float(np.min(cosines(expected, got)))
            agreement = top10_agreement(expected, got)
            faithful = cosine >= FAITHFUL_COSINE and agreement >= FAITHFUL_AGREEMENT
            if not faithful:
                speed = 0.0  # never chosen, however fast: not worth timing
            elif speed is None:
                speed = _speed(backend, timing, seconds, cancel, meter)
            results.append(
                meter.noted(
                    Measurement(
                        backend.name,
                        backend.description,
                        speed,
                        cosine,
                        faithful,
                        top10_agreement=agreement,
                    )
                )
            )
        except MeasurementCancelled:
            raise
        except BackendUnavailable as exc:
            steps["total"] -= len(batch) - (steps["done"] - before)
            results.append(Measurement(name, "", 0.0, 0.0, False, str(exc)))
        except Exception as exc:  # a backend that breaks is skipped, never fatal
            log.warning("backend candidate failed: %s", exc, exc_info=True)
            steps["total"] -= len(batch) - (steps["done"] - before)
            results.append(Measurement(name, "", 0.0, 0.0, False, f"{type(exc).__name__}: {exc}"))
    return results


def could_have_won(best: Measurement, measurements: list[Measurement]) -> Measurement | None:
    """A faithful backend that might have beaten ``best`` had other programs not taken a
    share of its cores, or None: the pick stands whatever the load was.

    A CPU-bound team whose cores others take a share ``s`` of runs at about (1 - s) of its
    speed, so a backend measured at v under that load may run at up to v / (1 - s) alone.
    The pick is disturbed when that bound of any other faithful backend exceeds the
    winner's measured speed (load only ever slows the winner too, so it stands at least
    that fast). No constant enters: the share comes from the core counts and tick counters
    (:meth:`LoadMeter.stolen`), the bar from the speeds measured; a wide margin (bf16 at
    2.6x fp32) survives heavy load, a near-tie does not survive a little."""
    for m in measurements:
        if m is best or not m.faithful or m.images_per_s <= 0 or not m.stolen:
            continue
        if m.stolen >= 1 or m.images_per_s / (1 - m.stolen) > best.images_per_s:
            return m
    return None


def decide(device: str, measurements: list[Measurement]) -> BackendChoice:
    reference = measurements[0]
    faithful = [m for m in measurements if m.faithful and m.images_per_s > 0]
    best = max(faithful, key=lambda m: m.images_per_s)
    ratio = best.images_per_s / reference.images_per_s if reference.images_per_s else 1.0
    if best is reference:
        reason = f"{device}: {best.description}, the fastest faithful backend measured"
    else:
        reason = f"{device}: {best.description}, {ratio:.1f}x fp32 measured"
    rival = could_have_won(best, measurements)
    if rival is not None:
        reason += (
            f"; measured under load (other programs took {rival.stolen:.0%} of the cores "
            f"while {rival.name} was timed)"
        )
    return BackendChoice(best.name, reason, measurements, provisional=rival is not None)


class ChoiceStore:
    """Measured choices per (model, machine), in a small JSON file."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / CHOICES_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") not in _READABLE_VERSIONS:
            return {}
        return data if isinstance(data.get("choices"), dict) else {}

    def get(self, model_key: str, machine: str) -> BackendChoice | None:
        """The remembered choice; None to measure: none remembered, ``index --remeasure``,
        or, in an index, one measured under load fewer than MEASUREMENTS_UNDER_LOAD times."""
        entry = self._read().get("choices", {}).get(f"{model_key} || {machine}")
        if not isinstance(entry, dict):
            return None
        watch = current_watch()
        if watch.remeasure:
            log.info("measuring the encoder backends again, as asked")
            return None
        if entry.get("name") not in BACKEND_NAMES or entry.get("name") == "auto":
            # an edited file, or a later version's backend: measured again, and replaced
            log.warning(
                "%s names an unknown encoder backend %r; measuring again",
                self.path,
                entry.get("name"),
            )
            return None
        provisional = entry.get("provisional") is True
        tries = entry.get("tries", 0)
        tries = tries if isinstance(tries, int) else MEASUREMENTS_UNDER_LOAD
        if provisional and watch.retry_provisional and tries < MEASUREMENTS_UNDER_LOAD:
            log.info("the encoder backends were measured under load; measuring again")
            return None
        known = {f.name for f in fields(Measurement)}  # a later version's extras: ignored
        try:
            return BackendChoice(
                entry["name"],
                entry["reason"],
                [
                    Measurement(**{k: v for k, v in m.items() if k in known})
                    for m in entry.get("measurements", [])
                ],
                provisional=provisional,
                tries=tries,
            )
        except (KeyError, TypeError, AttributeError):
            return None

    def put(self, model_key: str, machine: str, choice: BackendChoice) -> None:
        """Remember ``choice``. A provisional one counts its measurements under load in a
        row (``choice.tries``, set here) and its reason says what happens next."""
        data = self._read() or {"choices": {}}
        key = f"{model_key} || {machine}"
        if choice.provisional:
            before = data["choices"].get(key)
            again = isinstance(before, dict) and before.get("provisional") is True
            count = before.get("tries", 0) if again and isinstance(before, dict) else 0
            if current_watch().remeasure or not isinstance(count, int):
                count = 0  # asked for: a fresh series
            choice.tries = count + 1
            if choice.tries < MEASUREMENTS_UNDER_LOAD:
                choice.reason += "; measured again at the next index"
            else:
                choice.reason += (
                    f"; kept after {choice.tries} measurements under load "
                    "(`clipdesk index --remeasure` measures again)"
                )
        else:
            choice.tries = 0
        data["choices"][key] = {
            "name": choice.name,
            "reason": choice.reason,
            "measurements": [asdict(m) for m in choice.measurements],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "provisional": choice.provisional,
            "tries": choice.tries,
        }
        self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        data["version"] = _CHOICE_VERSION
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".part")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.replace(tmp, self.path)
