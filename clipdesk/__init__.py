"""clipdesk: explore your own photo collection by meaning.

The core (everything outside ``clipdesk.gui``) never imports Qt. Heavy libraries
(torch, open_clip, hnswlib) are imported lazily inside the functions that need them,
so ``clipdesk --help`` and the CLI's plain commands start fast.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _no_telemetry() -> None:
    """Keep third-party usage telemetry out of a program that promises to stay on this machine.

    ``import openvino`` loads OpenVINO's model-conversion tools, which start its telemetry
    (on by default when no consent file exists): a client id and counters in ``~/intel`` and an
    event sent to an analytics host. Those modules fall back to a silent stub when
    ``openvino_telemetry`` cannot be imported; a ``None`` entry in ``sys.modules`` makes
    ``import openvino_telemetry`` raise ImportError in this process only. Every entry point
    (CLI, window, bundle, tests, benches) imports this package before OpenVINO.
    """
    _sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    _os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    _os.environ.setdefault("DO_NOT_TRACK", "1")


_no_telemetry()
