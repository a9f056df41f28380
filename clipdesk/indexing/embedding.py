"""The embedding pipeline: decode ahead in a thread pool while the model runs.

A generator service: it yields a :class:`Progress` per batch, checks the cancel token
between batches, and commits each batch, so a stopped or killed run resumes where it
ended. Each distinct file content is embedded once, whatever the number of copies.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from clipdesk.imaging import DEFAULT_MAX_PIXELS, ImageRejected, PixelBudget, PlainJpeg, decoded_rgb
from clipdesk.indexing.device_decode import DEVICE_BATCH_CAP, DeviceDecoder
from clipdesk.library import Library, db
from clipdesk.models.encoder import Encoder
from clipdesk.progress import CancelToken, Progress, RateMeter
from clipdesk.search.vector_index import VectorIndex
from clipdesk.throttle import lower_this_thread

if TYPE_CHECKING:
    import torch

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class PendingImage:
    fingerprint: str
    path: str
    photo_ids: tuple[int, ...]


def pending_images(library: Library, model_id: int) -> list[PendingImage]:
    """Distinct readable contents that have no vector under ``model_id`` yet."""
    done = select(db.Embedding.fingerprint).where(db.Embedding.model_id == model_id)
    with library.session() as s:
        rows = s.execute(
            select(db.Photo.fingerprint, db.Photo.path, db.Photo.id)
            .where(db.Photo.error.is_(None), db.Photo.fingerprint.not_in(done))
            .order_by(db.Photo.path)
        ).all()
    grouped: dict[str, PendingImage] = {}
    for digest, path, photo_id in rows:
        seen = grouped.get(digest)
        grouped[digest] = (
            PendingImage(digest, path, (photo_id,))
            if seen is None
            else PendingImage(digest, seen.path, (*seen.photo_ids, photo_id))
        )
    return list(grouped.values())


# a preprocessed image, or a JPEG's bytes for the device decoder; None and why: it failed
Decoded = tuple[PendingImage, "np.ndarray | PlainJpeg | None", str | None]


def _cpu_decoder(
    encoder: Encoder, max_pixels: int, budget: PixelBudget | None = None
) -> Callable[[PendingImage], Decoded]:
    """Decode and preprocess one image; ``budget``: the pixels all decode threads may hold
    at once, from before an image's decoding to the end of its resize."""

    def decode(item: PendingImage) -> Decoded:
        try:
            with decoded_rgb(item.path, encoder.decode_side, max_pixels, budget) as image:
                return item, encoder.preprocess_image(image), None
        except ImageRejected as exc:
            return item, None, str(exc)
        except Exception as exc:
            return item, None, f"unexpected {type(exc).__name__}: {exc}"

    return decode


def _decoder(
    encoder: Encoder,
    max_pixels: int,
    device_decoder: DeviceDecoder | None,
    budget: PixelBudget | None = None,
) -> Callable[[PendingImage], Decoded]:
    """What a decode thread does: with a device decoder, only read plain JPEGs (the batch
    is decoded on the GPU); everything else, and everything without one, on the CPU."""
    cpu = _cpu_decoder(encoder, max_pixels, budget)
    if device_decoder is None:
        return cpu

    def read_or_decode(item: PendingImage) -> Decoded:
        try:
            jpeg = device_decoder.read(item.path, max_pixels)
        except ImageRejected as exc:
            return item, None, str(exc)
        except Exception:
            jpeg = None  # the CPU path reads it again and words what is wrong
        return (item, jpeg, None) if jpeg is not None else cpu(item)

    return read_or_decode


def _assemble_batch(
    inputs: list[np.ndarray | PlainJpeg],
    done: list[PendingImage],
    failed: list[tuple[PendingImage, str]],
    cpu_decode: Callable[[PendingImage], Decoded],
    device_decoder: DeviceDecoder | None,
) -> np.ndarray | torch.Tensor | None:
    """The batch in ``done``'s order: one tensor on the device decoder's device, or with
    none, a numpy array with every JPEG decoded on the CPU. A JPEG the device decoder fails
    on is decoded on the CPU instead; if that fails too, it moves from ``done`` to
    ``failed``. None when nothing is left to encode."""
    jpegs = [p for p in inputs if isinstance(p, PlainJpeg)]
    prepared = iter(device_decoder.prepare(jpegs) if device_decoder else [None] * len(jpegs))
    rows: list[torch.Tensor] = []  # with a device decoder
    arrays: list[np.ndarray] = []  # without
    kept, refused = [], []
    for item, part in zip(done, inputs, strict=True):
        row = next(prepared) if isinstance(part, PlainJpeg) else None
        if row is None:
            pixels: object = part
            if isinstance(part, PlainJpeg):
                _, pixels, reason = cpu_decode(item)
                if pixels is None:
                    refused.append((item, reason or "unknown error"))
                    continue
            assert isinstance(pixels, np.ndarray)
            if device_decoder is None:
                arrays.append(pixels[None])
                kept.append(item)
                continue
            import torch  # lazy: torch takes seconds to import; a device decoder has it

            row = torch.from_numpy(pixels[None]).to(device_decoder.device)
        rows.append(row)
        kept.append(item)
    batch: np.ndarray | torch.Tensor | None = None
    if device_decoder is None:
        batch = np.concatenate(arrays) if arrays else None
    else:
        import torch  # lazy, as above

        batch = torch.cat(rows) if rows else None
    done[:] = kept  # only now: if anything above raised, the caller can start over
    failed.extend(refused)
    return batch


def commit_batch(
    library: Library,
    model_id: int,
    done: list[PendingImage],
    vectors: np.ndarray,
    failed: list[tuple[PendingImage, str]],
    index: VectorIndex | None,
) -> None:
    """Store ``vectors`` (``done``'s, in order) and ``failed``'s reasons in one transaction,
    then add the vectors to ``index``."""
    with library.session() as s:
        before = db.current_generation(s.connection())
        if done:
            s.execute(
                sqlite_insert(db.Embedding)
                .values(
                    [
                        {
                            "fingerprint": item.fingerprint,
                            "model_id": model_id,
                            "vector": vector.tobytes(),
                        }
                        for item, vector in zip(done, vectors, strict=False)
                    ]
                )
                .on_conflict_do_nothing()
            )
        for item, reason in failed:
            s.execute(update(db.Photo).where(db.Photo.id.in_(item.photo_ids)).values(error=reason))
        after = db.current_generation(s.connection())
        s.commit()
    if index is not None and done:  # a batch of failures only has nothing to add
        ids = [pid for item in done for pid in item.photo_ids]
        rows = [row for item, row in zip(done, vectors, strict=False) for _ in item.photo_ids]
        index.add(
            np.asarray(ids, dtype=np.int64),
            np.asarray(rows, dtype=np.float32).reshape(len(ids), -1),
            before,
            after,
        )


def embed_pending(
    library: Library,
    encoder: Encoder,
    model_id: int,
    index: VectorIndex | None = None,
    cancel: CancelToken | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    low_priority: bool = False,
    embedded_before: int = 0,
    budget: PixelBudget | None = None,
) -> Iterator[Progress]:
    """Embed every photo that lacks a vector under ``model_id``; yields once per batch.
    ``low_priority``: the decode threads run at a lower priority too. ``embedded_before``:
    photos this job embedded already (the backend measurement's), shown in the progress.
    ``budget``: pixels decoded at once by all threads (default: from the memory available,
    :meth:`PixelBudget.for_this_machine`), so that many large images decoded side by side
    do not take many times one image's memory."""
    cancel = cancel or CancelToken()
    work = pending_images(library, model_id)
    meter = RateMeter(total=len(work) + embedded_before, base=embedded_before)
    if not work:
        message = "embedding photos" if embedded_before else "nothing new to embed"
        yield meter.report("embed", embedded_before, message=message)
        return
    workers = workers or max(2, os.cpu_count() or 2)
    # Enough decoded images queued that the next batch is ready when the model is.
    lookahead = 2 * batch_size + workers
    device_decoder = DeviceDecoder.for_encoder(encoder)
    if device_decoder is not None:  # the threads hold whole files: see DEVICE_BATCH_CAP
        batch_size = min(batch_size, DEVICE_BATCH_CAP)
        lookahead = batch_size + workers
    budget = budget or PixelBudget.for_this_machine(max_pixels)
    decode = _decoder(encoder, max_pixels, device_decoder, budget)
    finished, failures = embedded_before, 0
    queue = iter(work)
    inflight: deque[Future[Decoded]] = deque()
    initializer = lower_this_thread if low_priority else None
    with ThreadPoolExecutor(
        workers, thread_name_prefix="clipdesk-decode", initializer=initializer
    ) as pool:

        def top_up() -> None:
            while len(inflight) < lookahead:
                item = next(queue, None)
                if item is None:
                    return
                inflight.append(pool.submit(decode, item))

        top_up()
        done: list[PendingImage] = []
        inputs: list[np.ndarray | PlainJpeg] = []
        failed: list[tuple[PendingImage, str]] = []
        try:
            while inflight:
                item, decoded, reason = inflight.popleft().result()
                top_up()
                if decoded is None:
                    failed.append((item, reason or "unknown error"))
                else:
                    done.append(item)
                    inputs.append(decoded)
                # The first batch is small, so the model starts while the look-ahead fills
                # instead of idling until a whole batch is decoded.
                wanted = batch_size if finished > embedded_before else max(1, batch_size // 4)
                if len(inputs) < wanted and inflight:
                    continue
                batch: np.ndarray | torch.Tensor | None = None
                if device_decoder is not None and inputs:
                    cpu_decode = _cpu_decoder(encoder, max_pixels, budget)
                    try:
                        batch = _assemble_batch(inputs, done, failed, cpu_decode, device_decoder)
                    except Exception:
                        # the device failed on the batch as a whole (out of memory, say):
                        # this once, decode it all on the CPU; one photo never stops a run
                        batch = _assemble_batch(inputs, done, failed, cpu_decode, None)
                elif inputs:
                    batch = np.stack(cast(list[np.ndarray], inputs))  # no device: all arrays
                vectors = np.zeros((0, 0), np.float32)
                if batch is not None:
                    # a tensor only for an encoder that takes_tensors (the protocol's ndarray)
                    vectors = encoder.encode_batch(batch)  # type: ignore[arg-type]
                commit_batch(library, model_id, done, vectors, failed, index)
                finished += len(done) + len(failed)
                failures += len(failed)
                done, inputs, failed = [], [], []
                yield meter.report("embed", finished, failures, "embedding photos")
                meter.resumed()
                if cancel.cancelled:
                    break
        finally:
            for future in inflight:
                future.cancel()
