"""Issue 17's encoder items: a measurement that stops on Ctrl+C, progress in every phase of
a first index, children deaf to the terminal's Ctrl+C, bounded decoding memory, headers
that claim too much, a remeasured backend choice, and the core limit reaching hnswlib."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.backends.choice import BACKEND_ENV, CHOICES_FILE
from clipdesk.backends.measuring import MeasurementCancelled, measure, probe_images, watched
from clipdesk.backends.runtimes import BACKEND_NAMES, ImageBackend
from clipdesk.progress import CancelToken, Progress


class _Sleepy(ImageBackend):
    """The reference's vectors, ``pause`` seconds per batch: a slow candidate."""

    def __init__(self, inner: ImageBackend, name: str, pause: float) -> None:
        self.inner, self.name, self.description, self.pause = inner, name, name, pause
        self.calls = 0

    def encode(self, batch: Any) -> np.ndarray:
        self.calls += 1
        time.sleep(self.pause)
        return self.inner.encode(batch)


def _factory(make: Callable[..., ImageBackend], name: str, built: list[str]) -> Any:
    def build() -> ImageBackend:
        built.append(name)
        return make()

    build.backend_name = name  # type: ignore[attr-defined]
    return build


def test_a_cancel_after_the_reference_pass_stops_the_measurement_at_once(
    tiny_encoder: Any,
) -> None:
    reference = tiny_encoder.image_backend
    batch = probe_images(tiny_encoder.image_size, count=8)
    cancel, built = CancelToken(), list[str]()
    slow = [
        _factory(lambda n=n: _Sleepy(reference, n, 0.5), n, built) for n in ("slow-a", "slow-b")
    ]
    cancelled_at: list[float] = []

    def ctrl_c(_features: np.ndarray) -> None:  # the first measured pass is done
        cancel.cancel()
        cancelled_at.append(time.perf_counter())

    with pytest.raises(MeasurementCancelled):
        measure(reference, slow, batch, 2.0, on_reference=ctrl_c, cancel=cancel)
    # uncancelled: two candidates of >= 2 s of timing each
    assert time.perf_counter() - cancelled_at[0] < 0.5
    assert built == []


def test_a_cancel_during_a_candidates_timing_stops_within_a_batch(tiny_encoder: Any) -> None:
    reference = tiny_encoder.image_backend
    batch = probe_images(tiny_encoder.image_size, count=8)
    cancel, built = CancelToken(), list[str]()
    sleepy = _Sleepy(reference, "slow", 0.2)

    started: list[float] = []

    def stop_soon() -> ImageBackend:
        started.append(time.perf_counter())
        threading.Timer(0.5, cancel.cancel).start()
        return sleepy

    with pytest.raises(MeasurementCancelled), watched(cancel):
        measure(reference, [_factory(stop_soon, "slow", built)], batch, seconds=1.0)
    assert time.perf_counter() - started[0] < 0.9  # >= 1 s of timing otherwise
    assert sleepy.calls <= 5


def _slow_candidates_encoder(
    app: Any, spec: Any, choices: Path, monkeypatch: pytest.MonkeyPatch, pause: float
) -> Any:
    from clipdesk.models.encoder import ClipEncoder

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    encoder = ClipEncoder(spec, "cpu", choices_dir=choices)
    reference = encoder.image_backend
    built: list[str] = []

    def candidates(measured: dict[str, ImageBackend]) -> list[Any]:
        # Each fake registers what it built, as the real candidates do: when one of them
        # wins (timing noise, a loaded machine), it is adopted as measured.
        def make(name: str) -> ImageBackend:
            measured[name] = _Sleepy(reference, name, pause)
            return measured[name]

        return [_factory(lambda n=n: make(n), n, built) for n in ("slow-a", "slow-b")]

    monkeypatch.setattr(encoder, "_backend_candidates", candidates)
    app.preload(encoder)
    return encoder


def test_ctrl_c_during_a_first_indexs_measurement_stops_it_promptly(
    app: Any, photos: Path, tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 item 12: 'stopping after this batch', then 30 s more and every photo
    embedded. Now: cancelled after the first measured pass, the job ends within a batch,
    nothing is chosen or remembered, and no photo is embedded by the pipeline."""
    encoder = _slow_candidates_encoder(app, tiny_spec, tmp_path / "choices", monkeypatch, 0.5)
    app.add_folders([photos])
    cancel = CancelToken()
    phases: list[Progress] = []
    cancelled_at = None
    for progress in app.index(encoder.spec, "cpu", cancel):
        phases.append(progress)
        if progress.message.startswith("preparing slow-a") and cancelled_at is None:
            cancel.cancel()  # as Ctrl+C does, once the reference pass is done
            cancelled_at = time.perf_counter()
    assert cancelled_at is not None
    # uncancelled: 2 candidates x (fidelity pass + >= 2 s of timing) of 0.5 s batches
    assert time.perf_counter() - cancelled_at < 1.5
    assert "embed" not in [p.phase for p in phases]
    assert encoder.backend_choice is None
    assert not (tmp_path / "choices" / CHOICES_FILE).exists()


def test_the_measurement_reports_counted_steps_with_an_eta(
    app: Any, photos: Path, tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: 45-60 s of 'measuring the encoder backends' without a counter."""
    from clipdesk.cli.main import ProgressBar

    encoder = _slow_candidates_encoder(app, tiny_spec, tmp_path / "choices", monkeypatch, 0.0)
    app.add_folders([photos])
    prepare = [p for p in app.index(encoder.spec, "cpu") if p.phase == "prepare"]
    assert encoder.backend_choice is not None
    reading = [p for p in prepare if p.message == "reading sample photos"]
    measuring = [p for p in prepare if p.message.startswith("measuring ")]
    assert reading and reading[-1].total == 30
    assert {p.message for p in measuring} >= {"measuring torch-fp32", "measuring slow-a"}
    # 30 probe photos, encoded by the reference and both candidates
    assert measuring[-1].done == measuring[-1].total == 90
    assert [p.done for p in measuring] == sorted(p.done for p in measuring)
    assert any(p.eta_s is not None and p.done < p.total for p in measuring)
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update(Progress("prepare", 30, 90, eta_s=12.0, message="measuring slow-a"))
    bar.close()
    assert "encoder: measuring slow-a [#########" in out.getvalue()
    assert "30/90, ETA 12s" in out.getvalue()


def test_no_photos_per_second_before_any_was_measured() -> None:
    from clipdesk.cli.main import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update(Progress("embed", 256, 1000, rate=0.0, message="embedding photos"))
    bar.close()
    assert "256/1000" in out.getvalue() and "photos/s" not in out.getvalue()


def test_the_automatic_export_reports_its_steps(
    tiny_encoder: Any, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: about 45 s of silent export after a first index."""
    from clipdesk.indexing.exporting import EXPORT_STEPS
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    monkeypatch.setenv("CLIPDESK_AUTO_EXPORT", "1")
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    library = Library(tmp_path / "library")
    try:
        app = Clipdesk(library)
        app.preload(tiny_encoder)
        app.add_folders([photos])
        export = [p for p in app.index(tiny_encoder.spec) if p.phase == "export"]
    finally:
        library.close()
    steps = [p for p in export if p.total == EXPORT_STEPS]
    messages = [p.message for p in steps]
    assert "reading sample photos" in messages
    assert "exporting the text tower to ONNX" in messages
    assert [p.done for p in steps] == sorted(p.done for p in steps)
    assert max(p.done for p in steps) >= 5
    assert export[-1].message == "searches from the command line now start without torch"


def _sleep_and_say(pid_file: str, seconds: float) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)


def test_a_child_process_is_deaf_to_the_terminals_ctrl_c(tmp_path: Path) -> None:
    """A terminal's Ctrl+C reaches the whole process group: the export's child died of it
    on its own (a traceback, or worse, half-way through an import); the parent decides."""
    from clipdesk.models.aside import run_aside

    pid_file = tmp_path / "child.pid"
    codes: list[int | None] = []
    runner = threading.Thread(
        target=lambda: codes.append(run_aside(_sleep_and_say, (str(pid_file), 1.5)))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGINT)
    runner.join(60)
    assert codes == [0]


def test_a_cancelled_child_reads_as_cancelled_whatever_it_died_of(tmp_path: Path) -> None:
    from clipdesk.models.aside import run_aside

    cancel = CancelToken()
    pid_file = tmp_path / "child.pid"
    codes: list[int | None] = []
    runner = threading.Thread(
        target=lambda: codes.append(run_aside(_sleep_and_say, (str(pid_file), 30), cancel))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel.cancel()
    os.kill(int(pid_file.read_text()), signal.SIGTERM)  # it died before the parent looked
    runner.join(60)
    assert codes == [None]


# -- decoding memory (issue 17 item 10) --------------------------------------------------


class _SlowResize:
    """An encoder's preprocessing, slowed so that decode threads overlap."""

    decode_side = 32

    def preprocess_image(self, image: Any) -> np.ndarray:
        time.sleep(0.05)
        return np.asarray(image.resize((16, 16)), dtype=np.float32)


def _pngs(folder: Path, count: int, side: int) -> list[Any]:
    from PIL import Image

    from clipdesk.indexing.embedding import PendingImage

    folder.mkdir(exist_ok=True)
    items = []
    for i in range(count):
        path = folder / f"p{i}.png"
        Image.new("RGB", (side, side), (i * 20, 100, 50)).save(path)
        items.append(PendingImage(str(path), str(path), (i,)))
    return items


def test_decode_threads_together_stay_within_the_pixel_budget(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from clipdesk.imaging import PixelBudget
    from clipdesk.indexing.embedding import _cpu_decoder

    items = _pngs(tmp_path / "png", 8, 100)  # 10,000 px each
    budget = PixelBudget(25_000)  # two at once, not four
    decode = _cpu_decoder(_SlowResize(), 10**6, budget)  # type: ignore[arg-type]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(decode, items))
    assert all(pixels is not None and reason is None for _i, pixels, reason in results)
    assert budget.peak == 20_000  # the threads overlapped, two images at a time at most
    assert budget.held == 0

    alone = PixelBudget(5_000)  # smaller than one image: it still decodes, alone
    decode = _cpu_decoder(_SlowResize(), 10**6, alone)  # type: ignore[arg-type]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(decode, items[:3]))
    assert all(reason is None for _i, _p, reason in results)
    assert alone.peak == 10_000 and alone.held == 0


def test_a_failed_decode_gives_its_pixels_back(tmp_path: Path) -> None:
    from clipdesk.imaging import PixelBudget
    from clipdesk.indexing.embedding import PendingImage, _cpu_decoder

    broken = tmp_path / "broken.png"
    (item,) = _pngs(tmp_path / "png", 1, 100)
    broken.write_bytes(Path(item.path).read_bytes()[:200])  # header intact, data cut
    budget = PixelBudget(10**6)
    decode = _cpu_decoder(_SlowResize(), 10**6, budget)  # type: ignore[arg-type]
    _item, pixels, reason = decode(PendingImage(str(broken), str(broken), (1,)))
    assert pixels is None and reason
    assert budget.held == 0


def test_a_large_jpeg_holds_only_the_pixels_of_its_reduced_decode(tmp_path: Path) -> None:
    from PIL import Image

    from clipdesk.imaging import PixelBudget, decoded_rgb

    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(path, quality=80)
    budget = PixelBudget(10**7)
    with decoded_rgb(str(path), 100, budget=budget) as image:
        assert image.size == (200, 150)  # DCT-scaled by 8: at least 100 px a side
        assert budget.held == 200 * 150  # not 1.92 MP
    assert budget.held == 0


def test_the_budget_comes_from_the_memory_available_with_one_largest_image_as_floor() -> None:
    from clipdesk.imaging import DECODE_BYTES_PER_PIXEL, DECODE_MEMORY_SHARE, PixelBudget

    largest = 250_000_000
    assert PixelBudget.for_memory(2 * 10**9, largest).capacity == largest  # a small machine
    big = PixelBudget.for_memory(64 * 10**9, largest).capacity
    assert big == int(64 * 10**9 * DECODE_MEMORY_SHARE / DECODE_BYTES_PER_PIXEL)
    assert PixelBudget.for_memory(None, largest).capacity == 2 * largest
    assert PixelBudget.for_this_machine(largest).capacity >= largest


# -- headers that claim more than the file holds (issue 17) --------------------------------


def _claiming(path: Path, width: int, height: int) -> Path:
    """A real 16x16 JPEG whose frame header is rewritten to claim ``width`` x ``height``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_jpeg_header_claiming_15000x16000_is_refused_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from clipdesk import imaging

    crafted = _claiming(tmp_path / "crafted.jpg", 15000, 16000)  # 240 MP: under the cap
    with pytest.raises(imaging.ImageRejected, match=r"claims 15000x16000 px.*not decoded"):
        imaging.read_header(str(crafted))

    def no_decoding(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("clipdesk.imaging.simplejpeg.decode_jpeg", no_decoding)
    with pytest.raises(imaging.ImageRejected, match="claims 15000x16000 px"):
        imaging.load_rgb(str(crafted), 224)


def test_a_header_over_the_pixel_cap_is_a_reason_at_the_scan(tmp_path: Path) -> None:
    from clipdesk import imaging

    crafted = _claiming(tmp_path / "huge.jpg", 16000, 16000)  # 256 MP
    with pytest.raises(imaging.ImageRejected, match=r"decompression bomb.*250"):
        imaging.read_header(str(crafted))
    with pytest.raises(imaging.ImageRejected, match=r"decompression bomb.*250"):
        imaging.load_rgb(str(crafted), 224)
    trap = _claiming(tmp_path / "trap.jpg", 60000, 60000)  # 3600 MP: Pillow's own check
    with pytest.raises(imaging.ImageRejected, match="decompression bomb"):
        imaging.read_header(str(trap))


def test_honest_files_as_small_as_their_content_allows_still_pass(tmp_path: Path) -> None:
    """The floor is what any content needs: one flat colour, the best case of each codec."""
    from PIL import Image

    from clipdesk import imaging

    flat = tmp_path / "flat.jpg"
    Image.new("L", (4000, 3000), 128).save(flat, "JPEG", quality=10, optimize=True)
    progressive = tmp_path / "flat-progressive.jpg"
    Image.new("RGB", (4000, 3000), (9, 9, 9)).save(progressive, "JPEG", progressive=True)
    png = tmp_path / "flat.png"
    Image.new("RGB", (4000, 3000), (255, 255, 255)).save(png, optimize=True)
    for path in (flat, progressive, png):
        assert imaging.read_header(str(path)).width == 4000
        assert imaging.load_rgb(str(path), 224).size[0] >= 224


def test_a_cut_png_is_refused_by_its_claimed_size(tmp_path: Path) -> None:
    from PIL import Image

    from clipdesk import imaging

    whole = tmp_path / "whole.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:120])
    with pytest.raises(imaging.ImageRejected, match="claims 400x400 px"):
        imaging.read_header(str(cut))


def test_an_unknown_backend_in_backends_json_is_measured_again_and_replaced(
    tiny_spec: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 17: an unknown name in backends.json blocked indexing without naming the file."""
    import json

    from clipdesk.models.encoder import ClipEncoder

    monkeypatch.delenv(BACKEND_ENV, raising=False)

    def one_candidate(self: Any, _built: Any = None) -> list[Any]:  # no OpenVINO export
        return [_factory(lambda: _Sleepy(self.image_backend, "torch-fp32", 0.0), "copy", [])]

    monkeypatch.setattr(ClipEncoder, "_backend_candidates", one_candidate)
    first = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    first.select_backend(seconds=0.05)
    store = tmp_path / CHOICES_FILE
    data = json.loads(store.read_text())
    for entry in data["choices"].values():
        entry["name"] = "openvino-fp64-turbo"
    store.write_text(json.dumps(data))
    again = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    with caplog.at_level("WARNING"):
        choice = again.select_backend(seconds=0.05)
    assert choice.name in BACKEND_NAMES and choice.measurements
    assert str(store) in caplog.text and "openvino-fp64-turbo" in caplog.text
    assert "openvino-fp64-turbo" not in store.read_text()  # the bad entry was replaced
