"""clipdesk keeps third-party telemetry off: nothing written to ~/intel, no connection tried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs OpenVINO the way clipdesk does (import, Core, a model converted from torch and compiled,
# one inference) with every socket connect and name lookup recorded by an audit hook.
PROBE = r"""
import json, sys
events = []
def hook(name, args):
    if name in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        events.append([name, repr(args)[:200]])
sys.addaudithook(hook)
if sys.argv[1] == "clipdesk":
    import clipdesk  # noqa: F401  (every entry point imports the package first)
import numpy as np
import openvino as ov
import torch
model = ov.convert_model(torch.nn.Linear(3, 2), example_input=torch.zeros(1, 3))
compiled = ov.Core().compile_model(model, "CPU")
compiled(np.zeros((1, 3), np.float32))
print(json.dumps(events))
"""


def _run_probe(home: Path, first_import: str) -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(home)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, first_import],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    events: list[list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return events


def test_openvino_through_clipdesk_writes_no_client_id_and_connects_nowhere(tmp_path: Path) -> None:
    assert _run_probe(tmp_path, "clipdesk") == []
    assert not (tmp_path / "intel").exists()


def test_the_probe_sees_openvino_telemetry_when_clipdesk_does_not_switch_it_off(
    tmp_path: Path,
) -> None:
    # Asked of the installed packages: in this process clipdesk has already made the module
    # unimportable (pytest.importorskip would always skip).
    from importlib import metadata

    try:
        metadata.distribution("openvino-telemetry")
    except metadata.PackageNotFoundError:
        pytest.skip("openvino-telemetry is not installed: nothing to switch off")
    _run_probe(tmp_path, "plain")
    assert (tmp_path / "intel" / "openvino_ga_cid").exists()
