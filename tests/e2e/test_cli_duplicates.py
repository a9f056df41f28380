"""`clipdesk duplicates` as a user runs it (separate processes, the trained test model):
the groups with the photo to keep first, nothing moved without --yes, the trash through
send2trash into a trash set up for the test, the library forgetting the trashed photos,
every other photo byte-identical with its time, and the undo list."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from clipdesk.library import Library, db
from clipdesk.library.tags import MANUAL, set_marks
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, FIXTURE_PHOTOS, run_cli
from tests.unit.test_duplicates import plant


def _state(folder: Path) -> dict[Path, tuple[str, int]]:
    """Every file under ``folder``: its content hash and mtime."""
    return {
        p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, dict[Path, set[Path]], dict[str, str]]:
    photos = tmp_path / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    planted = plant(photos)
    # send2trash (freedesktop) moves a file to $XDG_DATA_HOME/Trash when it is on the home
    # folder's drive: both under tmp_path, so the test's trash is its own.
    (tmp_path / "home").mkdir()
    env = {
        "CLIPDESK_AUTO_EXPORT": "0",
        "CLIPDESK_BACKEND": "torch-fp32",
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    library = tmp_path / "library"
    run_cli("add", str(photos), library=library, env=env)
    model = ["--model", CLOTHING_SPEC, "--model-config", str(CLOTHING_CONFIG)]
    run_cli("index", *model, library=library, env=env)
    return library, photos, planted, env


def test_list_then_trash_what_the_suggestion_drops(
    setup: tuple[Path, Path, dict[Path, set[Path]], dict[str, str]],
) -> None:
    library, photos, planted, env = setup
    before = _state(photos)
    listed = json.loads(run_cli("duplicates", "--json", library=library, env=env).stdout)
    groups = listed["groups"]
    assert listed["threshold"] is not None and "derived" in listed["threshold_how"]
    assert sorted(sorted(p["path"] for p in g["photos"]) for g in groups) == sorted(
        sorted(str(p) for p in {original} | copies) for original, copies in planted.items()
    )
    for group in groups:
        first, *rest = group["photos"]
        assert first["keep"] and Path(first["path"]) in planted and not any(r["keep"] for r in rest)
        assert set(first) >= {"path", "score", "keep"}
    human = run_cli("duplicates", library=library, env=env).stdout
    assert "kept first:" in human and "to free" in human and "threshold" in human

    # without --yes: it says what it would do, and nothing moves
    dry = run_cli("duplicates", "--trash-suggested", library=library, env=env).stdout
    dropped = {Path(p["path"]) for g in groups for p in g["photos"][1:]}
    assert dropped and all(f"would trash {p}" in dry for p in dropped) and "--yes" in dry
    assert _state(photos) == before
    assert not (Path(env["XDG_DATA_HOME"]) / "Trash").exists()

    done = run_cli("duplicates", "--trash-suggested", "--yes", library=library, env=env)
    trash = Path(env["XDG_DATA_HOME"]) / "Trash" / "files"
    assert sorted(p.name for p in trash.iterdir()) == sorted(p.name for p in dropped)
    for path in dropped:  # moved whole, not rewritten: the trash holds the same bytes
        assert not path.exists()
        moved = [t for t in trash.iterdir() if t.name == path.name]
        assert (
            len(moved) == 1
            and hashlib.sha256(moved[0].read_bytes()).hexdigest() == (before[path][0])
        )
    after = _state(photos)
    assert after == {p: v for p, v in before.items() if p not in dropped}
    assert "moved to the trash" in done.stdout

    # the library forgot them; the rest are still there
    status = json.loads(run_cli("status", "--json", library=library, env=env).stdout)
    assert status["photos"] == len(before) - len(dropped)
    again = json.loads(run_cli("duplicates", "--json", library=library, env=env).stdout)
    assert again["groups"] == []
    log = json.loads(
        run_cli("duplicates", "--undo-list", "--json", library=library, env=env).stdout
    )
    assert {Path(e["path"]) for e in log} == dropped
    assert all(Path(e["trash_path"]).parent == trash for e in log)
    assert all(Path(e["trash_path"]).exists() for e in log)
    words = run_cli("duplicates", "--undo-list", library=library, env=env).stdout
    assert all(str(p) in words for p in dropped)


def test_a_changed_file_and_a_broken_trash_are_errors_for_those_files_only(
    setup: tuple[Path, Path, dict[Path, set[Path]], dict[str, str]],
) -> None:
    library, photos, planted, env = setup
    groups = json.loads(run_cli("duplicates", "--json", library=library, env=env).stdout)["groups"]
    dropped = [Path(p["path"]) for g in groups for p in g["photos"][1:]]
    changed = dropped[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    before = _state(photos)
    done = run_cli(
        "duplicates", "--trash-suggested", "--yes", library=library, env=env, check=False
    )
    assert done.returncode == 1
    assert f"not trashed: {changed}" in done.stderr and "changed since" in done.stderr
    assert changed.exists() and _state(photos)[changed] == before[changed]
    assert all(not p.exists() for p in dropped[1:])

    # a trash that cannot be written: every file stays, each one said
    (photos / "more").mkdir()
    copy = photos / "more" / "again.jpg"
    shutil.copy2(next(iter(planted)), copy)
    run_cli("index", library=library, env=env)
    regrouped = json.loads(run_cli("duplicates", "--json", library=library, env=env).stdout)
    dropping = [p["path"] for g in regrouped["groups"] for p in g["photos"][1:]]
    assert dropping and any(
        copy.name in path for g in regrouped["groups"] for path in [p["path"] for p in g["photos"]]
    )
    broken = Path(env["XDG_DATA_HOME"]) / "Trash"
    shutil.rmtree(broken)
    broken.write_text("not a folder")
    before = _state(photos)
    failed = run_cli(
        "duplicates", "--trash-suggested", "--yes", library=library, env=env, check=False
    )
    assert failed.returncode == 1
    assert all(
        f"not trashed: {path}: the system trash failed" in failed.stderr for path in dropping
    )
    assert _state(photos) == before
    still = json.loads(run_cli("duplicates", "--json", library=library, env=env).stdout)
    assert still["groups"] == regrouped["groups"]  # the library forgot nothing


def test_what_a_user_reads_before_trashing(
    setup: tuple[Path, Path, dict[Path, set[Path]], dict[str, str]],
) -> None:
    library, photos, planted, env = setup
    original = next(p for p, copies in planted.items() if len(copies) == 2)
    exact = photos / "backup" / f"{original.stem} (1).jpg"
    small = photos / "edits" / "small.jpg"

    # text: an exact copy is called one, the merit column is explained
    human = run_cli("duplicates", library=library, env=env).stdout
    assert f"{exact}  exact copy" in human and "merit as the one to keep" in human
    assert f"{small}  similarity" in human and "mixed" in human

    # --exact has no threshold: the pair is refused, not half obeyed
    both = run_cli(
        "duplicates", "--exact", "--threshold", "0.5", library=library, env=env, check=False
    )
    assert both.returncode == 2 and "--exact" in both.stderr and "threshold" in both.stderr

    # a folder that is not there, inside a library folder
    missing = run_cli("duplicates", str(photos / "nosuch"), library=library, env=env, check=False)
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    assert missing.stdout == ""
    edits = run_cli("duplicates", str(photos / "edits"), library=library, env=env).stdout
    assert f"among {len(list((photos / 'edits').iterdir()))} photos" in edits

    # a photo to be trashed with the user's own tags: warned, in words and in JSON
    lib = Library(library)
    try:
        with lib.session() as s:
            pid = s.scalar(select(db.Photo.id).where(db.Photo.path == str(small)))
        assert pid is not None
        set_marks(lib, [pid], "beach", MANUAL)
    finally:
        lib.close()
    dry = run_cli("duplicates", "--trash-suggested", library=library, env=env).stdout
    assert f"warning: {small} has tags the kept photo ({original}) lacks: beach" in dry
    assert "derived from the library as it is now" in dry and "threshold" in dry
    listed = json.loads(run_cli("duplicates", "--json", library=library, env=env).stdout)
    lost = {p["path"]: p["tags_lost"] for g in listed["groups"] for p in g["photos"]}
    assert lost[str(small)] == ["beach"] and lost[str(original)] == []
    done = run_cli("duplicates", "--trash-suggested", "--yes", library=library, env=env)
    assert done.stdout.index(f"warning: {small}") < done.stdout.index(f"trashed {small}")

    # put one back from the trash and index again: the undo list says it is restored
    log = json.loads(
        run_cli("duplicates", "--undo-list", "--json", library=library, env=env).stdout
    )
    entry = next(e for e in log if e["path"] == str(small))
    os.rename(entry["trash_path"], small)
    run_cli("index", library=library, env=env)
    again = json.loads(
        run_cli("duplicates", "--undo-list", "--json", library=library, env=env).stdout
    )
    assert {e["path"]: e["restored"] for e in again} == {
        e["path"]: e["path"] == str(small) for e in log
    }
    words = run_cli("duplicates", "--undo-list", library=library, env=env).stdout
    assert f"{small}  -> restored" in words
