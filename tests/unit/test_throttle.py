"""Throttled indexing: fewer cores, lower priority for the indexing threads only."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from clipdesk.services import Clipdesk
from clipdesk.throttle import Throttle, applied, lower_this_thread, usable_cores


def test_cores_are_clamped_to_the_machine() -> None:
    assert Throttle().cores == usable_cores()
    assert Throttle(1).cores == 1
    assert Throttle(10_000).cores == usable_cores()
    assert Throttle(0).cores == 1
    assert Throttle(1, True).describe().endswith("low priority")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority: Linux")
def test_only_the_calling_thread_is_lowered() -> None:
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def job() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        assert lower_this_thread()
        seen["delta"] = os.getpriority(os.PRIO_PROCESS, tid) - before

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert seen["delta"] > 0 or main_before >= 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_applied_limits_torch_threads_and_restores_them() -> None:
    import torch

    before = torch.get_num_threads()
    with applied(Throttle(1)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_throttled_index_gives_the_same_library(
    app: Clipdesk, photos: Path, tiny_spec: Any
) -> None:
    app.add_folders([photos])
    result: dict[str, object] = {}

    def run() -> None:  # on a thread of its own, as the app does
        result["progress"] = list(app.index(tiny_spec, "cpu", throttle=Throttle(1, True)))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    status = app.status()
    assert (status.photos, status.indexed, status.failed) == (30, 30, [])
