"""Run a function in a child process (spawned, so it works in a frozen app too).

Exporting a model with torch's TorchScript exporter holds the GIL for long stretches: in
the app's process it froze the window (0.6 s). A child costs a few seconds of start-up,
returns its memory when it ends, and can be killed at once when the user cancels.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from typing import Any

from clipdesk.progress import CancelToken
from clipdesk.spec import ModelSpec


def _deaf_to_ctrl_c(target: Callable[..., None], *args: Any) -> None:
    """The child's first act: ignore SIGINT. A terminal's Ctrl+C reaches the whole process
    group; the parent decides (its cancel token) and kills the child, instead of the child
    dying half-way through an import or an export with a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target(*args)


def run_aside(
    target: Callable[..., None],
    args: tuple[Any, ...],
    cancel: CancelToken | None = None,
    timeout: float = 3600.0,
) -> int | None:
    """Run ``target(*args)`` in a child process and wait; the child's exit code, or None
    when ``cancel`` or ``timeout`` stopped it (killed)."""
    child = multiprocessing.get_context("spawn").Process(
        target=_deaf_to_ctrl_c, args=(target, *args), name="clipdesk-aside", daemon=True
    )
    child.start()
    deadline = time.monotonic() + timeout
    while child.is_alive():
        child.join(0.2)
        stop = cancel is not None and cancel.cancelled
        if child.is_alive() and (stop or time.monotonic() > deadline):
            child.kill()
            child.join()
            return None
    if cancel is not None and cancel.cancelled and child.exitcode != 0:
        return None  # it ended as it was stopped (a Ctrl+C before it could ignore one)
    return child.exitcode


def spec_fields(spec: ModelSpec) -> tuple[str, str, str | None, str | None]:
    """A ModelSpec as plain values for a child process to rebuild it from."""
    return (spec.arch, spec.pretrained, spec.config_json, spec.key)
