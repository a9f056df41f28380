"""Issue 17: the backend choice notes the load it was measured under and is measured again
when that load could have changed the pick (and on ``index --remeasure``); ``--cores N``
reaches hnswlib's threads and numpy's BLAS threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import hnswlib
import pytest
import threadpoolctl

from clipdesk.backends import measuring
from clipdesk.backends.choice import (
    BACKEND_ENV,
    CHOICES_FILE,
    MEASUREMENTS_UNDER_LOAD,
    BackendChoice,
    ChoiceStore,
    decide,
)
from clipdesk.backends.measuring import LoadMeter, Measurement, watched
from clipdesk.backends.runtimes import ImageBackend, TorchBackend
from clipdesk.services import Clipdesk
from clipdesk.throttle import Throttle, hnswlib_threads, usable_cores
from tests.helpers import random_photos


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


def test_a_throttled_index_gives_hnswlib_and_blas_only_its_cores(
    app: Clipdesk, photos: Path, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--cores 1: every add_items of the index runs with num_threads=1, and numpy's BLAS
    has one thread while the photos are embedded; both are as before afterwards."""
    blas_before = _blas_threads()
    assert blas_before, "numpy has no BLAS threadpoolctl can see"
    seen: list[tuple[Any, list[int]]] = []
    real_add_items = hnswlib.Index.add_items

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        # called from commit_batch, inside the embed loop
        seen.append((kwargs.get("num_threads", "not given"), _blas_threads()))
        return real_add_items(self, *args, **kwargs)

    monkeypatch.setattr(hnswlib.Index, "add_items", spy)
    app.add_folders([photos])
    errors: list[BaseException] = []

    def run() -> None:  # on a thread of its own, as the app does (it lowers its priority)
        try:
            list(app.index(tiny_spec, "cpu", batch_size=8, throttle=Throttle(1, True)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert not errors, errors
    assert app.status().indexed == 30
    assert len(seen) >= 4  # 30 photos in batches of 8
    assert {threads for threads, _ in seen} == {1}
    assert all(blas and set(blas) == {1} for _, blas in seen), seen
    # restored: a search afterwards uses every core again
    assert _blas_threads() == blas_before
    assert hnswlib_threads() == -1


def test_a_throttled_rebuild_of_the_graph_uses_only_the_throttles_cores(
    app: Clipdesk, photos: Path, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph rebuilt from SQLite at the start of a throttled index (a missing or
    damaged graph file) is built with the throttle's cores too."""
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    index = app.vector_index()
    for graph in index.meta_path.parent.glob(f"{index._stem}-*"):
        graph.unlink()
    index.meta_path.unlink(missing_ok=True)
    index._index = None
    app.serving.close_indexes()
    seen: list[Any] = []
    real_add_items = hnswlib.Index.add_items

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("num_threads", "not given"))
        return real_add_items(self, *args, **kwargs)

    monkeypatch.setattr(hnswlib.Index, "add_items", spy)
    list(app.index(None, "cpu", throttle=Throttle(1)))
    assert seen and set(seen) == {1}
    assert len(app.search_text("a hat", k=3)) == 3


# -- the backend choice and the load it was measured under ------------------------------


def _hogs(count: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """Other programs keeping ``count`` cores busy for ``seconds``."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="others' CPU time: /proc/stat")
def test_the_load_meter_sees_other_programs_and_not_itself() -> None:
    meter = LoadMeter(threads=usable_cores())
    with meter.span():  # this process alone, busy
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pass
    # its own spinning is its own (a shared machine may give it less than a core)
    assert meter.own / meter.wall > 0.1 and meter.others is not None
    assert meter.own + meter.others <= meter.wall * meter.cpus + 0.1
    hogs = _hogs(1, 1.5)
    try:
        time.sleep(0.2)  # started
        busy = LoadMeter(threads=usable_cores())
        with busy.span():
            time.sleep(1.0)  # this process idle, one other core busy
    finally:
        for hog in hogs:
            hog.wait()
    assert busy.own / busy.wall < 0.2
    assert busy.others is not None and busy.others / busy.wall > 0.7
    if measuring._busy_ticks() is not None and busy.cpus == usable_cores():
        assert (busy.stolen() or 0) > 0.2  # a busy core of the ones asked for


def _m(name: str, speed: float, stolen: float | None) -> Measurement:
    return Measurement(name, name, speed, 1.0, True, stolen=stolen)


def test_a_pick_is_disturbed_only_when_the_load_could_have_changed_it() -> None:
    """The bar is the measured margin: a near-tie falls to a little load, 2.5x does not."""
    ref = _m("torch-fp32", 100.0, 0.0)
    assert decide("cpu", [ref, _m("openvino-fp32", 95.0, 0.10)]).provisional
    assert not decide("cpu", [ref, _m("openvino-fp32", 95.0, 0.02)]).provisional
    wide = [_m("torch-fp32", 40.0, 0.5), _m("torch-bf16", 100.0, 0.0)]
    assert not decide("cpu", wide).provisional
    assert not decide("cpu", [ref, _m("openvino-fp32", 95.0, None)]).provisional
    slow = decide("cpu", [_m("torch-fp32", 40.0, 0.7), _m("torch-bf16", 100.0, 0.0)])
    assert slow.provisional and slow.name == "torch-bf16"
    assert "measured under load" in slow.reason and "70%" in slow.reason


def _candidate_is_the_reference(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every encoder measures one candidate (a second fp32 tower: a near-tie, as a real
    close pick is); returns the list the measurements are counted in."""
    from clipdesk.models.encoder import ClipEncoder

    monkeypatch.delenv(BACKEND_ENV, raising=False)

    def candidates(self: ClipEncoder, built: dict[str, Any] | None = None) -> list[Any]:
        def make() -> ImageBackend:
            backend = TorchBackend(self.model, self.device, "fp32")
            backend.name = "openvino-fp32"  # a different name, the same speed
            if built is not None:
                built[backend.name] = backend
            return backend

        make.backend_name = "openvino-fp32"  # type: ignore[attr-defined]
        return [make]

    monkeypatch.setattr(ClipEncoder, "_backend_candidates", candidates)
    counted: list[int] = []
    real_measure = measuring.measure

    def measure(
        reference: Any, candidates: Any, batch: Any, _seconds: float = 2.0, **kwargs: Any
    ) -> list[Measurement]:
        counted.append(1)
        # timed for half a second instead of two: the test's time, not what it proves
        return real_measure(reference, candidates, batch, 0.5, **kwargs)

    monkeypatch.setattr(measuring, "measure", measure)
    return counted


def _entry(models: Path) -> dict[str, Any]:
    data = json.loads((models / CHOICES_FILE).read_text())
    assert data["version"] == 2
    (entry,) = data["choices"].values()
    result: dict[str, Any] = entry
    return result


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="others' CPU time: /proc/stat")
def test_a_choice_measured_under_load_is_measured_again_and_remeasure_measures(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clipdesk.cli.main import main
    from tests.helpers import TINY_CONFIG, TINY_SPEC

    models = tmp_path / "models"
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(models))
    monkeypatch.setenv("CLIPDESK_NO_OPENVINO", "1")
    counted = _candidate_is_the_reference(monkeypatch)
    lib = ["--library", str(tmp_path / "library")]
    assert main([*lib, "add", str(photos)]) == 0

    # 1. measured while other programs keep every core busy: provisional
    hogs = _hogs(os.cpu_count() or 1, 30)
    try:
        assert main([*lib, "index", "--model", TINY_SPEC, "--model-config", str(TINY_CONFIG)]) == 0
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert len(counted) == 1
    entry = _entry(models)
    assert entry["provisional"] is True and entry["tries"] == 1, entry
    assert all(m["other_cores"] is not None for m in entry["measurements"])
    capsys.readouterr()
    assert main([*lib, "status"]) == 0
    assert "measured under load" in capsys.readouterr().out

    # 2. the next index with photos to embed measures again (and records the new load)
    random_photos(photos / "more", 3, seed=1)
    assert main([*lib, "index"]) == 0
    assert len(counted) == 2
    entry = _entry(models)
    assert entry["provisional"] is False or entry["tries"] == 2  # this machine may be busy

    # 3. measured under load as often as allowed: kept, not measured again
    data = json.loads((models / CHOICES_FILE).read_text())
    for choice in data["choices"].values():
        choice.update(provisional=True, tries=MEASUREMENTS_UNDER_LOAD)
    (models / CHOICES_FILE).write_text(json.dumps(data))
    random_photos(photos / "more", 3, seed=2)
    assert main([*lib, "index"]) == 0
    assert len(counted) == 2

    # 4. --remeasure measures again, with nothing new to embed
    capsys.readouterr()
    assert main([*lib, "index", "--remeasure"]) == 0
    assert len(counted) == 3
    assert _entry(models)["tries"] in (0, 1)  # a fresh series
    assert "0 new" in capsys.readouterr().out

    # a backend fixed by setting is not measured: --remeasure says so
    assert main([*lib, "index", "--remeasure", "--backend", "torch-fp32"]) == 2
    assert "--backend auto" in capsys.readouterr().err
    assert len(counted) == 3


def test_a_version_1_choices_file_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChoiceStore(tmp_path)
    measured = {"name": "torch-fp32", "description": "fp32 via torch", "images_per_s": 9.0}
    measured |= {"min_cosine": 1.0, "faithful": True, "error": "", "top10_agreement": 1.0}
    old = {"name": "torch-fp32", "reason": "cpu: fp32", "measurements": [measured]}
    store.path.write_text(json.dumps({"version": 1, "choices": {"m || cpu": old}}))
    # read outside an index (in one, its rule 1 judgement is measured again: issue 21)
    choice = store.get("m", "cpu")
    assert choice is not None and not choice.provisional
    assert choice.measurements[0].stolen is None
    with watched(None):
        assert store.get("m", "cpu") is None  # judged under fidelity rule 1: measured again
    store.put("n", "cpu", BackendChoice("torch-fp32", "cpu: fp32", []))
    assert store.get("m", "cpu") is not None  # kept when the file is written as version 2
