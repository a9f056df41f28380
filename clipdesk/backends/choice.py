"""The one choice of an encoder's image backend: the same CLIP image tower run the fastest
faithful way.

A plain fp32 torch loop leaves most of a modern CPU unused: CPUs with avx512_bf16 or AMX
run bfloat16 matrix products natively, and OpenVINO fuses the whole graph. Which is fastest
differs from machine to machine, so clipdesk measures the candidates once per model and
machine (:mod:`clipdesk.backends.measuring`), keeps only the *faithful* ones (every embedding
within cosine 0.999 of the fp32 reference, and no ranking changed beyond ties:
:func:`clipdesk.backends.measuring.judge`), picks the fastest and remembers the choice
(``backends.json`` in the models folder) with the version of the rule it was judged under: a
choice judged under an older rule is measured again at the next index. Vectors from a
faithful backend are the same model's vectors: they mix safely. Both encoders (torch and an
export) choose through :func:`choose`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np

from clipdesk.backends import measuring
from clipdesk.backends.measuring import (
    FIDELITY_RULE,
    BackendFactory,
    Measurement,
    ReferenceVectors,
    current_watch,
    probe_images,
)
from clipdesk.backends.runtimes import BACKEND_NAMES, ImageBackend
from clipdesk.files import atomic_write
from clipdesk.spec import ModelSpec

log = logging.getLogger(__name__)

BACKEND_ENV = "CLIPDESK_BACKEND"  # force one (e.g. torch-fp32) instead of measuring
CHOICES_FILE = "backends.json"
# 2: each choice also records the load it was measured under (a version 1 file is still read:
# its choices count as measured undisturbed) and whether it is provisional. Each choice also
# records the fidelity rule it was judged under ("rule"; none: rule 1), within version 2: an
# older clipdesk reads the file as before.
_CHOICE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
# A choice measured while other programs took cores it needed is measured again at the next
# index, this many times in all at most: an always-busy machine keeps its last pick.
MEASUREMENTS_UNDER_LOAD = 3


@dataclass
class BackendChoice:
    name: str
    reason: str  # one line for `status`: "cpu: bf16 via torch, 2.6x fp32 measured"
    measurements: list[Measurement]
    # Measured while other programs took cores it needed, so that a different pick may
    # have won: measured again at a later index (see MEASUREMENTS_UNDER_LOAD).
    provisional: bool = False
    tries: int = 0  # measurements under load in a row, this one included
    # The fidelity rule its measurements were judged under (measuring.FIDELITY_RULE); a
    # choice remembered without one was judged under rule 1.
    rule: int = FIDELITY_RULE


def measure_again(choice: BackendChoice) -> bool:
    """Whether an index measures ``choice`` again: it was measured under load, fewer than
    MEASUREMENTS_UNDER_LOAD times in a row, or judged under an older fidelity rule."""
    if outdated(choice):
        return True
    return choice.provisional is True and choice.tries < MEASUREMENTS_UNDER_LOAD


def outdated(choice: BackendChoice) -> bool:
    """Whether ``choice`` was measured and judged under an older fidelity rule, which may
    have rejected a backend the current one accepts (rule 1 rejected bf16 for reordering
    ties) or accepted one it rejects. A choice fixed by setting was not judged at all."""
    return bool(choice.measurements) and choice.rule < FIDELITY_RULE


def fixed_backend(setting: str | None) -> str | None:
    """The backend a setting (or $CLIPDESK_BACKEND) fixes, which nothing measures; None
    when the backends are measured ("auto")."""
    name = setting or os.environ.get(BACKEND_ENV) or None
    return None if name in (None, "auto") else name


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
                measured = measuring.measure(
                    reference, candidates, batch, seconds, on_reference=on_reference
                )
                choice = decide(encoder.device, measured)
                if store is not None:
                    store.put(encoder.spec.key, machine, choice)
        # as measured, not built again (an OpenVINO compile is 2 s on 2 cores)
        encoder.adopt(choice.name, built.get(choice.name))
        encoder.backend_choice = choice
        return choice


def could_have_won(best: Measurement, measurements: list[Measurement]) -> Measurement | None:
    """A faithful backend that might have beaten ``best`` had other programs not taken a
    share of its cores, or None: the pick stands whatever the load was.

    A CPU-bound team whose cores others take a share ``s`` of runs at about (1 - s) of its
    speed, so a backend measured at v under that load may run at up to v / (1 - s) alone.
    The pick is disturbed when that bound of any other faithful backend exceeds the
    winner's measured speed (load only ever slows the winner too, so it stands at least
    that fast). No constant enters: the share comes from the core counts and tick counters
    (:meth:`~clipdesk.backends.measuring.LoadMeter.stolen`), the bar from the speeds
    measured; a wide margin (bf16 at 2.6x fp32) survives heavy load, a near-tie does not
    survive a little."""
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
        reason += f"; {reordering(best)}" if reordering(best) else ""
    rival = could_have_won(best, measurements)
    if rival is not None:
        reason += (
            f"; measured under load (other programs took {rival.stolen:.0%} of the cores "
            f"while {rival.name} was timed)"
        )
    return BackendChoice(best.name, reason, measurements, provisional=rival is not None)


def reordering(m: Measurement) -> str:
    """What a backend changes of the rankings, for `status`: "reorders only ties (fp32 score
    gaps up to 4.3e-05, tie band 2.1e-04)"; "" where it was not judged so (rule 1)."""
    if m.reordered_gap is None or m.tie_band is None:
        return ""
    if m.reordered_gap == 0:
        return "same rankings as fp32"
    return (
        f"reorders only ties (fp32 score gaps up to {m.reordered_gap:.1e}, "
        f"tie band {m.tie_band:.1e})"
    )


class ChoiceStore:
    """Measured choices per (model, machine), in a small JSON file."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / CHOICES_FILE

    def _read(self) -> tuple[dict[str, object], dict[str, object]]:
        """The file's data and the choices in it; both empty where it is missing, unreadable
        or of a version this one cannot read."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, {}
        if not isinstance(data, dict) or data.get("version") not in _READABLE_VERSIONS:
            return {}, {}
        choices = data.get("choices")
        return (data, choices) if isinstance(choices, dict) else ({}, {})

    def get(self, model_key: str, machine: str) -> BackendChoice | None:
        """The remembered choice; None to measure: none remembered, ``index --remeasure``,
        or, in an index, one measured under load fewer than MEASUREMENTS_UNDER_LOAD times or
        judged under an older fidelity rule. (Outside an index the old choice serves: it
        passed min cosine 0.999 too, and an index measures on the user's own photos.)"""
        _, choices = self._read()
        entry = choices.get(f"{model_key} || {machine}")
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
        rule = entry.get("rule", 1)  # remembered without one: judged under rule 1
        rule = rule if isinstance(rule, int) else 1
        if rule < FIDELITY_RULE and watch.retry_provisional and entry.get("measurements"):
            log.info("the encoder backends were judged under an older rule; measuring again")
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
                rule=rule,
            )
        except (KeyError, TypeError, AttributeError):
            return None

    def put(self, model_key: str, machine: str, choice: BackendChoice) -> None:
        """Remember ``choice``. A provisional one counts its measurements under load in a
        row (``choice.tries``, set here) and its reason says what happens next."""
        data, choices = self._read()
        key = f"{model_key} || {machine}"
        if choice.provisional:
            before = choices.get(key)
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
        choices[key] = {
            "name": choice.name,
            "reason": choice.reason,
            "measurements": [asdict(m) for m in choice.measurements],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "provisional": choice.provisional,
            "tries": choice.tries,
            "rule": choice.rule,
        }
        data["choices"] = choices
        data["version"] = _CHOICE_VERSION
        atomic_write(self.path, json.dumps(data, indent=1))
