"""Exporting a library's model to run without torch: by hand (``clipdesk models export``),
and once after a model's first complete index, so that later one-shot searches start fast.
Both judge the export on the library's own photos."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from clipdesk.errors import ClipdeskError
from clipdesk.imaging import DEFAULT_MAX_PIXELS
from clipdesk.indexing.probe import probe_batch, probe_paths
from clipdesk.library import Library
from clipdesk.models import export_files
from clipdesk.models.encoder import ClipEncoder, Encoder
from clipdesk.models.store import default_models_dir
from clipdesk.progress import CancelToken, JobWarning, Progress, RateMeter, run_reporting

AUTO_EXPORT_ENV = "CLIPDESK_AUTO_EXPORT"  # "0": no export after a model's first full index
# Lines an export's child reports (model loaded, photos read, two towers exported, two
# judged, written), and the parent's "done": the export's progress counts these.
EXPORT_STEPS = 7


def export_encoder(
    library: Library,
    encoder: Encoder,
    exports_dir: Path,
    report: Callable[[str], None] | None = None,
    replace: bool = False,
) -> Path:
    """Export ``encoder``'s model into ``exports_dir``, judged on up to PROBE_PHOTOS of
    ``library``'s photos; ``replace``: an existing export too."""
    # lazy: the tokenizer it brings (ftfy, regex) costs a cold start 0.16 s
    from clipdesk.models.export import export_model

    if not encoder.exportable:  # exporting traces the torch model
        raise ClipdeskError("exporting needs torch: run it with the full clipdesk")
    assert isinstance(encoder, ClipEncoder)  # what ``exportable`` promises
    paths = probe_paths(library)
    probe = probe_batch(encoder, paths, DEFAULT_MAX_PIXELS) if paths else None
    pixels = probe.pixels if probe else None
    return export_model(encoder, exports_dir, probe=pixels, report=report, replace=replace)


def export_once(library: Library, encoder: Encoder, cancel: CancelToken) -> Iterator[Progress]:
    """After a model's first complete index, export it (once, in a child process) so
    that later one-shot searches start without torch. $CLIPDESK_AUTO_EXPORT=0 skips."""
    # lazy: the tokenizer it brings (ftfy, regex) costs a cold start 0.16 s
    from clipdesk.models.export import export_model_aside

    failed_setting = f"export_failed:{encoder.spec.key}"
    if os.environ.get(AUTO_EXPORT_ENV, "1") == "0":
        return
    if export_files.find_export(encoder.spec.key, intact=True) is not None:
        return  # (a damaged one is made again)
    if library.get_setting(failed_setting):
        return  # tried once and it failed: not a minute on every index run
    yield Progress("export", 0, 1, message="preparing fast searches (once per model)")
    paths = probe_paths(library)

    def work(report: Callable[[Progress], None]) -> None:
        # The child sends a line per step down a pipe; read here while it runs.
        reader, writer = multiprocessing.get_context("spawn").Pipe(duplex=False)
        meter = RateMeter(total=EXPORT_STEPS)
        stop = threading.Event()

        def relay() -> None:
            done = 0
            report(meter.report("export", done, message="loading the model"))
            while not stop.is_set():
                try:
                    if not reader.poll(0.2):
                        continue
                    line = str(reader.recv())
                except (EOFError, OSError):
                    return
                done = min(done + 1, EXPORT_STEPS - 1)  # the last step is the parent's
                report(meter.report("export", done, message=line))

        relaying = threading.Thread(target=relay, name="clipdesk-export-steps")
        relaying.start()
        try:
            export_model_aside(
                encoder.spec,
                library.models_dir,
                default_models_dir() / export_files.EXPORTS_SUBDIR,
                paths,
                cancel,
                steps=writer,
            )
        finally:
            stop.set()
            relaying.join()
            reader.close()
            writer.close()

    try:
        yield from run_reporting(work, cancel, name="clipdesk-export")
        message = "searches from the command line now start without torch"
        warning = None
    except ClipdeskError as exc:  # a model that cannot be exported still works
        message = f"the model was not exported: {exc}"
        warning = JobWarning.EXPORT_FAILED
        if not cancel.cancelled:
            library.set_setting(failed_setting, str(exc))
    yield Progress("export", 1, 1, message=message, warning=warning)
