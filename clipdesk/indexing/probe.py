"""The user's own photos as a probe: what the encoder backends are judged on when an index
starts (once per model and machine), and what an export is checked against."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from clipdesk.backends.measuring import MeasurementCancelled, watched
from clipdesk.backends.runtimes import unit_rows
from clipdesk.imaging import ImageRejected, load_rgb
from clipdesk.indexing.embedding import PendingImage, commit_batch
from clipdesk.library import Library
from clipdesk.library.browsing import list_photo_ids, photo_refs
from clipdesk.models.encoder import Encoder
from clipdesk.progress import CancelToken, Progress, RateMeter, run_reporting
from clipdesk.search.vector_index import VectorIndex

# Photos a backend is judged on. Rankings among more photos have more near-ties, so a small
# probe is optimistic: OpenVINO bf16 kept the top-10 of 95.7 % of 93 test photos but of only
# 84 % of all 372. 256 costs ~13 s of fp32 ViT-B-32 on 2 cores, once per model and machine.
PROBE_PHOTOS = 256


@dataclass(frozen=True)
class Probe:
    pixels: np.ndarray  # preprocessed, one row per photo used
    used: list[int]  # each row's position in the paths it was drawn from


def probe_paths(library: Library) -> list[str]:
    """Up to PROBE_PHOTOS of the library's photos, spread over it (one id query and
    one page of rows, also at a million photos)."""
    ids = list_photo_ids(library)
    step = max(len(ids) // PROBE_PHOTOS, 1)
    refs = photo_refs(library, [int(i) for i in ids[::step][:PROBE_PHOTOS]])
    return [ref.path for ref in refs.values()]


def probe_batch(
    encoder: Encoder,
    paths: list[str],
    max_pixels: int,
    cancel: CancelToken | None = None,
    report: Callable[[Progress], None] | None = None,
) -> Probe | None:
    """Up to PROBE_PHOTOS of the user's own photos, preprocessed, spread over the library,
    to judge the encoder backends on; None when too few can be read (or ``cancel``)."""
    step = max(len(paths) // PROBE_PHOTOS, 1)
    tensors, used = [], []
    positions = range(0, len(paths), step)[:PROBE_PHOTOS]
    meter = RateMeter(total=len(positions))
    for count, position in enumerate(positions):
        if cancel is not None and cancel.cancelled:
            return None
        if report is not None:
            report(meter.report("prepare", count, message="reading sample photos"))
        try:
            image = load_rgb(paths[position], encoder.decode_side, max_pixels)
            tensors.append(encoder.preprocess_image(image))
            used.append(position)
        except ImageRejected:
            continue  # the pipeline meets it again and records why
    if len(tensors) < 24:
        return None  # synthetic probes then
    return Probe(np.stack(tensors), used)


def measure_backends(
    library: Library,
    encoder: Encoder,
    model_id: int,
    index: VectorIndex,
    pending: list[PendingImage],
    cancel: CancelToken,
    max_pixels: int,
    override: str | None,
    remeasure: bool,
) -> Generator[Progress, None, int | None]:
    """Choose ``encoder``'s backend (``override``: the backend setting), measured on a
    probe of ``pending`` (nothing pending: of the library's photos). Returns how many of
    ``pending`` the reference pass embedded and stored, or None when ``cancel`` stopped it
    (what that pass stored is kept, and ``index`` saved)."""
    yield Progress("prepare", 0, 1, message="measuring the encoder backends")
    kept: list[PendingImage] = []

    def choose(report: Callable[[Progress], None]) -> None:
        # on a thread of its own (run_reporting): the bar moves meanwhile, and
        # Ctrl+C stops it between two batches (MeasurementCancelled)
        # nothing to embed (--remeasure): the library's photos are the probe
        paths = [p.path for p in pending] or probe_paths(library)
        probe = probe_batch(encoder, paths, max_pixels, cancel, report)
        if cancel.cancelled:
            return

        def keep(features: np.ndarray, probe: Probe | None = probe) -> None:
            # The reference pass over the probe is the default backend's work
            # on these photos: stored, it is 256 photos less to embed (23 s of
            # fp32 ViT-B-32 on 2 cores) instead of a measurement thrown away.
            assert probe is not None
            kept[:] = [pending[i] for i in probe.used]
            commit_batch(library, model_id, kept, unit_rows(features), [], index)

        meter = RateMeter(total=1)

        def step(done: int, total: int, message: str) -> None:
            meter.total = total
            report(meter.report("prepare", done, message=message))

        with watched(cancel, step, remeasure):
            encoder.select_backend(
                override,
                probe=probe.pixels if probe else None,
                on_reference=keep if probe and pending else None,
            )

    try:
        yield from run_reporting(choose, cancel, name="clipdesk-measure")
    except MeasurementCancelled:
        assert cancel.cancelled  # stopped by the user: returns just below
    if cancel.cancelled:  # the reference pass's vectors are kept, if it ended
        index.save()
        return None
    yield Progress("prepare", 1, 1, message=encoder.device_reason)
    return len(kept)
