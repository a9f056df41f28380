"""Faults a real library meets: bad files, permissions, odd names, and a killed indexer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import FIXTURE_PHOTOS, TINY_CONFIG, TINY_SPEC, make_bad_files, run_cli

TINY = ["--model", TINY_SPEC, "--model-config", str(TINY_CONFIG)]


def _unprivileged_prefix() -> list[str]:
    """Root reads any file whatever its mode, so as root the CLI runs in a new user
    namespace (``unshare -U``): same files, no capabilities, permissions enforced."""
    if os.name != "posix" or os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-U", "true"]).returncode != 0:
        pytest.skip("running as root without user namespaces: permissions cannot be tested")
    return [unshare, "-U"]


def _cli(*args: str, library: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [
            *_unprivileged_prefix(),
            sys.executable,
            "-m",
            "clipdesk",
            "--library",
            str(library),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        errors="surrogateescape",
    )


def test_every_kind_of_bad_input_is_recorded_and_the_rest_indexed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    expected = make_bad_files(photos / "bad", next(photos.rglob("*.jpg")))
    good = next((photos / "hat").glob("*.jpg"))
    # Unreadable file and unreadable folder (with a photo inside).
    locked_file = photos / "bad" / "locked.jpg"
    shutil.copy(good, locked_file)
    locked_file.chmod(0)
    locked_dir = photos / "locked-folder"
    locked_dir.mkdir()
    shutil.copy(good, locked_dir / "inside.jpg")
    locked_dir.chmod(0)
    # A name that is not valid UTF-8.
    odd_name = os.path.join(os.fsencode(photos), b"caf\xe9-\xff.jpg")
    shutil.copy(os.fsencode(good), odd_name)
    # The photo folder itself is read-only: clipdesk must not need to write there.
    for folder in [photos, *[p for p in photos.rglob("*") if p.is_dir() and p != locked_dir]]:
        folder.chmod(0o555)
    library = tmp_path / "library"
    before = {str(p): p.stat().st_mtime_ns for p in photos.rglob("*") if p != locked_dir}
    try:
        assert _cli("add", str(photos), library=library, tmp=tmp_path).returncode == 0
        proc = _cli("index", *TINY, library=library, tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "could not read" in proc.stderr and "locked-folder" in proc.stderr
        status = json.loads(_cli("status", "--json", library=library, tmp=tmp_path).stdout)
    finally:
        for folder in [photos, *[p for p in photos.rglob("*") if p.is_dir()]]:
            folder.chmod(0o755)
        locked_dir.chmod(0o755)
    reasons = {os.path.basename(f["path"]): f["reason"] for f in status["failed"]}
    expected["locked.jpg"] = "permission denied"
    assert set(reasons) == set(expected), reasons
    for name, part in expected.items():
        assert part in reasons[name], (name, reasons[name])
    assert status["indexed"] == 31  # 30 fixtures + the odd name
    assert {str(p): p.stat().st_mtime_ns for p in photos.rglob("*") if p != locked_dir} == before
    # The odd name comes back byte for byte.
    hits = _cli("search", "a hat", "-k", "40", "--json", library=library, tmp=tmp_path)
    paths = [os.fsencode(h["path"]) for h in json.loads(hits.stdout)]
    assert odd_name in paths


def _count_vectors(db_path: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT count(*) FROM embeddings").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_run_resumes_to_the_same_results(tmp_path: Path, photos: Path) -> None:
    library = tmp_path / "killed"
    run_cli("add", str(photos), library=library)
    args = [
        sys.executable,
        "-m",
        "clipdesk",
        "--library",
        str(library),
        "index",
        "--model",
        "ViT-B-32:random",
        "--batch-size",
        "2",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _count_vectors(library / "library.sqlite3") < 4:
        assert proc.poll() is None, "the indexer finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = _count_vectors(library / "library.sqlite3")
    assert 4 <= done_at_kill < 30, done_at_kill

    con = sqlite3.connect(library / "library.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    out = run_cli("index", library=library).stdout
    assert "30 of 30 photos indexed" in out

    clean = tmp_path / "clean"
    run_cli("add", str(photos), library=clean)
    run_cli("index", "--model", "ViT-B-32:random", library=clean)
    for query in ("a hat", "shoes on a white background"):
        resumed = json.loads(run_cli("search", query, "-k", "10", "--json", library=library).stdout)
        uninterrupted = json.loads(
            run_cli("search", query, "-k", "10", "--json", library=clean).stdout
        )
        assert [h["path"] for h in resumed] == [h["path"] for h in uninterrupted]
        for a, b in zip(resumed, uninterrupted, strict=False):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
