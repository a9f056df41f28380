"""Measuring the backends: the speed of each candidate and its fidelity to the fp32 reference,
and the load of other programs while it was timed.

A candidate is *faithful* (:func:`judge`, rule :data:`FIDELITY_RULE`) when every embedding of
the probe photos lies within cosine 0.999 of the reference's and it changes no ranking a user
can see: it may reorder photos whose fp32 scores are tied within the noise of its own
numerical error, never put a photo above one that fp32 scores clearly better. Its vectors are
the same model's vectors and mix safely with the reference's. A measurement obeys the
:class:`Watch` set around it (:func:`watched`): it stops when cancelled and reports its steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from clipdesk.backends.hardware import asked_threads
from clipdesk.backends.runtimes import BackendUnavailable, ImageBackend
from clipdesk.errors import ClipdeskError
from clipdesk.progress import CancelToken

log = logging.getLogger(__name__)

FAITHFUL_COSINE = 0.999
# The rule before FIDELITY_RULE 2 (and still the export's check of its fp16 weights): the
# share of queries whose top-10 neighbours are exactly the same set. It rejected bf16 for
# swapping photos whose fp32 scores were equal to 4e-5 (issue 21).
FAITHFUL_AGREEMENT = 0.95
# The version of the rule a remembered choice was judged under: 1, cosine and top-10
# agreement; 2, cosine and ties only (:func:`judge`). A choice judged under an older rule is
# measured again (clipdesk.backends.choice).
FIDELITY_RULE = 2
TIES_FALSE_ALARM = 0.01  # chance that noise alone crosses the tie band anywhere in a probe
RANKS_SEEN = 10  # the top-k a user looks at
TIMING_BATCH = 32  # speed is timed on batches of the size the pipeline uses


class MeasurementCancelled(ClipdeskError):
    """The user stopped the measurement: nothing was chosen, nothing is remembered."""


# done, total (photo encodings), what runs now
StepReport = Callable[[int, int, str], None]
# Given the reference backend's raw features of the probe photos, in the probe's order.
ReferenceVectors = Callable[[np.ndarray], None]
# A candidate, built when it is measured; it may carry ``backend_name`` and
# ``skip_if_faithful`` attributes (see :func:`measure`).
BackendFactory = Callable[[], ImageBackend]


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
    :data:`clipdesk.backends.choice.MEASUREMENTS_UNDER_LOAD`), and with ``remeasure`` any
    remembered choice is."""
    token = _watching.set(Watch(cancel, report, remeasure, retry_provisional=True))
    try:
        yield
    finally:
        _watching.reset(token)


def stop_if_cancelled(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise MeasurementCancelled("the encoder backend measurement was cancelled")


@dataclass
class Measurement:
    name: str
    description: str
    images_per_s: float
    min_cosine: float
    faithful: bool
    error: str = ""
    top10_agreement: float = 1.0
    # Rule 2 (judge): the tie band derived from this backend's score error, the largest fp32
    # score gap between two photos it ranks the other way round (0.0: it reorders nothing),
    # and the mean share of each probe photo's top-10 neighbours it keeps. None: not judged.
    tie_band: float | None = None
    reordered_gap: float | None = None
    recall_at_10: float | None = None
    # The load while it was timed (None: not timed, or not known on this system), in cores:
    own_cores: float | None = None  # this process's CPU seconds per second
    other_cores: float | None = None  # everything else's, hypervisor steal included
    stolen: float | None = None  # share of the cores it asked for that others took


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


# -- fidelity ------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Fidelity:
    """What :func:`judge` found (the fields a :class:`Measurement` records)."""

    min_cosine: float
    tie_band: float
    reordered_gap: float
    recall_at_10: float
    top10_agreement: float

    @property
    def faithful(self) -> bool:
        return bool(self.min_cosine >= FAITHFUL_COSINE and self.reordered_gap <= self.tie_band)


def tie_band(errors: np.ndarray) -> float:
    """The largest fp32 score gap that a backend's numerical noise may reorder, from its
    score errors ``errors`` (backend minus fp32 score, over every query x photo pair).

    Two photos i, j swap places when their fp32 gap is under ``e_j - e_i``, the difference
    of their score errors. The noise's scale is estimated robustly, by the median absolute
    deviation (sigma = 1.4826 MAD, robust while fewer than half the pairs are off), so that
    a few photos a backend gets badly wrong (still within cosine 0.999) do not widen the band
    that would excuse them. With errors of that scale, ``e_j - e_i`` has the scale sigma
    sqrt(2); the band is the gap such noise exceeds with a chance of TIES_FALSE_ALARM over
    all the pairs together (a Bonferroni bound: the two-sided normal quantile at
    TIES_FALSE_ALARM / pairs, z = 5.3 for a 256-photo probe). No less than a float32 ulp at
    1.0: scores rounded to float32 are tied within that whatever computed them."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    floor = float(np.finfo(np.float32).eps)
    if errors.size == 0:
        return floor
    mad = float(np.median(np.abs(errors - np.median(errors))))
    sigma = 1.4826 * mad
    z = statistics.NormalDist().inv_cdf(1 - TIES_FALSE_ALARM / (2 * errors.size))
    return float(max(z * np.sqrt(2) * sigma, floor))


def judge(reference: np.ndarray, candidate: np.ndarray, k: int = RANKS_SEEN) -> Fidelity:
    """The fidelity of ``candidate``'s features to ``reference``'s (the same photos, fp32),
    judged on what a user sees: each probe photo is a query (as in "similar photos"; each
    side's own vectors, as a library holds them), ranking the others by cosine.

    - min cosine of each photo's two vectors (>= FAITHFUL_COSINE, as under rule 1);
    - the tie band (:func:`tie_band`), from the errors of all query x photo scores;
    - the largest *reordered gap*: for each query, each photo of fp32's top-k, and each
      photo the candidate ranks above it that fp32 scores lower, the fp32 score gap between
      the two. Faithful only if that never exceeds the tie band: a photo scored clearly
      better than the k-th (by more than the band) stays in the top-k, a photo entering the
      top-k is within the band of the k-th, and no order within it changes across more.

    recall@10 (the mean share of fp32's top-k the candidate keeps) and top-10 agreement
    (rule 1's figure) are reported alongside."""
    n = len(reference)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    got = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cosine = float(np.min(np.sum(ref * got, axis=1))) if n else 1.0
    k = min(k, n - 2)
    if k < 1:
        return Fidelity(cosine, tie_band(np.zeros(0)), 0.0, 1.0, 1.0)
    want = (ref @ ref.T).astype(np.float64)
    have = (got @ got.T).astype(np.float64)
    others = ~np.eye(n, dtype=bool)
    band = tie_band((have - want)[others])
    np.fill_diagonal(want, -np.inf)  # a photo is not its own neighbour
    np.fill_diagonal(have, -np.inf)
    gap, kept, same = 0.0, 0, 0
    for q in range(n):
        want_top = np.argsort(-want[q], kind="stable")[:k]
        have_top = np.argsort(-have[q], kind="stable")[:k]
        common = len(set(want_top.tolist()) & set(have_top.tolist()))
        kept += common
        same += common == k
        for i in want_top:
            # photos fp32 scores lower than i that the candidate ranks above it
            passed = (want[q] < want[q, i]) & (have[q] > have[q, i])
            if passed.any():
                gap = max(gap, float(want[q, i] - want[q][passed].min()))
    return Fidelity(cosine, band, gap, kept / (n * k), same / n)


# -- speed -----------------------------------------------------------------------------


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
    candidates: list[BackendFactory],
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
            fidelity = judge(expected, got)
            faithful = fidelity.faithful
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
                        fidelity.min_cosine,
                        faithful,
                        top10_agreement=fidelity.top10_agreement,
                        tie_band=fidelity.tie_band,
                        reordered_gap=fidelity.reordered_gap,
                        recall_at_10=fidelity.recall_at_10,
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
