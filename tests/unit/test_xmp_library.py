"""The library's tags to XMP sidecars and back (Clipdesk.export_tags_xmp, import_tags):
every folder that can be written is, a read-only one is one error, the photos are never
written, and an import never overrides what the user said."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipdesk.library import tags as tag_rule
from clipdesk.progress import CancelToken
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from clipdesk.tagging import xmp
from tests.unit.test_xmp import keywords

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="needs exiftool")


@pytest.fixture()
def tagged(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> Clipdesk:
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    app.create_label_set("clothes", ["hat", "shoes", "dress"])
    list(app.tag("clothes"))
    return app


@pytest.fixture()
def scanned(app: Clipdesk, photos: Path) -> Clipdesk:
    """The photos found, no model: tags given by hand only (fast)."""
    app.add_folders([photos])
    list(app.scan())
    return app


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*.jpg"))}


def _id(app: Clipdesk, path: Path) -> int:
    photo = app.find_photo(path)
    assert photo is not None
    return photo.id


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[str]:
    """``folder`` made so that no file can be created in it: chmod 0o555, or where that
    does not stop this user (root), the immutable attribute (chattr +i)."""
    os.chmod(folder, 0o555)
    how = "chmod"
    try:
        (folder / ".probe").touch()
    except PermissionError:
        pass
    else:
        (folder / ".probe").unlink()
        os.chmod(folder, 0o755)
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("no way to make a folder read-only for this user here")
        how = "chattr"
    try:
        yield how
    finally:
        if how == "chattr":
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_export_writes_every_folder_it_can_and_never_the_photos(
    tagged: Clipdesk, photos: Path
) -> None:
    hat, shoes = sorted((photos / "hat").glob("*.jpg"))[0], sorted((photos / "shoes").glob("*.jpg"))
    tagged.mark_tag("Places/Paris", [_id(tagged, hat), _id(tagged, shoes[0])], "manual")
    rejected = next(t for t in tagged.tags_of([_id(tagged, shoes[1])])[_id(tagged, shoes[1])])
    tagged.mark_tag(rejected.label, [_id(tagged, shoes[1])], "rejected")
    tags = tagged.tags_of([_id(tagged, p) for p in sorted(photos.rglob("*.jpg"))])
    in_hat = sum(1 for p in (photos / "hat").glob("*.jpg") if tags.get(_id(tagged, p)))
    before = _state(photos)
    report = xmp.SidecarReport()
    with unwritable(photos / "hat"):
        list(tagged.export_tags_xmp(None, report))
    assert list(report.failed_folders) == [str(photos / "hat")]
    assert report.failed_folders[str(photos / "hat")][1] == in_hat >= 1  # one error
    assert not report.failed and report.written == len(tags) - in_hat
    assert report.written == len(list(photos.rglob("*.xmp")))
    assert not list((photos / "hat").glob("*.xmp"))
    assert _state(photos) == before  # every photo byte-identical, same mtime
    assert keywords(Path(f"{shoes[0]}.xmp"))["tags_list"][0] == "Places/Paris"
    assert keywords(Path(f"{shoes[0]}.xmp"))["subject"][0] == "Paris"
    if Path(f"{shoes[1]}.xmp").exists():  # (none when the rejected tag was its only one)
        assert rejected.label not in keywords(Path(f"{shoes[1]}.xmp")).get("subject", [])

    again = xmp.SidecarReport()
    list(tagged.export_tags_xmp(photos / "shoes", again, with_auto=False))
    assert (again.written, again.unchanged, again.untagged) == (0, 1, 2)


def test_no_auto_writes_only_the_users_tags(tagged: Clipdesk, photos: Path) -> None:
    dress = sorted((photos / "dress").glob("*.jpg"))
    tagged.mark_tag("Family/Grandma", [_id(tagged, dress[0])], "manual")
    report = xmp.SidecarReport()
    list(tagged.export_tags_xmp(photos / "dress", report, with_auto=False))
    assert report.written == 1 and report.untagged == 2
    assert keywords(Path(f"{dress[0]}.xmp"))["tags_list"] == ["Family/Grandma"]


def test_import_reads_sidecars_and_embedded_keywords_and_keeps_the_users_word(
    scanned: Clipdesk, photos: Path
) -> None:
    tagged = scanned
    skirt = sorted((photos / "skirt").glob("*.jpg"))
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-overwrite_original",
            "-IPTC:Keywords=Picnic",
            "-XMP-lr:HierarchicalSubject=Trips|Crete",
            str(skirt[0]),
        ],
        check=True,
    )
    xmp.write_sidecar(f"{skirt[1]}.xmp", ["Trips/Crete", "Picnic"])
    tagged.mark_tag("Picnic", [_id(tagged, skirt[1])], "rejected")  # the user said no
    tagged.mark_tag("Trips/Crete", [_id(tagged, skirt[1])], "confirmed")
    before = _state(photos)
    report = xmp.ImportReport()
    list(tagged.import_tags(photos / "skirt", report))
    assert (report.photos, report.with_keywords) == (3, 2)
    assert (report.added, report.already, report.rejected) == (2, 1, 1)
    assert report.tags == {"Picnic", "Trips/Crete"}
    first = {
        t.label: t.source for t in tagged.tags_of([_id(tagged, skirt[0])])[_id(tagged, skirt[0])]
    }
    assert first["Picnic"] == first["Trips/Crete"] == tag_rule.IMPORTED
    second = tagged.tags_of([_id(tagged, skirt[1])])[_id(tagged, skirt[1])]
    assert "Picnic" not in [t.label for t in second]  # the rejection stands
    assert next(t.source for t in second if t.label == "Trips/Crete") == tag_rule.CONFIRMED
    assert _state(photos) == {**before}  # reading changed no photo


def test_a_folder_gone_is_one_error_and_a_cancel_stops_the_export(
    scanned: Clipdesk, photos: Path
) -> None:
    every = sorted(photos.rglob("*.jpg"))
    scanned.mark_tag("Holidays", [_id(scanned, p) for p in every], "manual")
    (photos / "pants").rename(photos.parent / "pants-away")  # its disk unplugged
    report = xmp.SidecarReport()
    list(scanned.export_tags_xmp(photos, report))
    assert report.failed_folders == {
        str(photos / "pants"): ("the folder is not there (its disk away?)", 3)
    }
    assert report.written == 27 and not report.failed

    for sidecar in photos.rglob("*.xmp"):
        sidecar.unlink()
    cancel = CancelToken()
    stopped = xmp.SidecarReport()
    reports = []
    for progress in scanned.export_tags_xmp(photos, stopped, cancel=cancel):
        reports.append(progress)
        cancel.cancel()  # Ctrl+C, or the window's Stop, at the first report
    assert len(reports) == 1 and reports[0].done < reports[0].total
    assert 1 <= stopped.written == len(list(photos.rglob("*.xmp"))) < 27


def test_a_rejected_or_removed_tag_is_taken_out_of_the_sidecar(
    scanned: Clipdesk, photos: Path
) -> None:
    first, second = sorted((photos / "dress").glob("*.jpg"))[:2]
    p, q = _id(scanned, first), _id(scanned, second)
    scanned.mark_tag("Family/Grandma", [p, q], "manual")
    scanned.mark_tag("dress", [p], "manual")
    scanned.mark_tag("Blue sky", [q], "manual")
    list(scanned.export_tags_xmp(photos / "dress", xmp.SidecarReport()))
    assert keywords(Path(f"{first}.xmp"))["tags_list"] == ["Family/Grandma", "dress"]
    scanned.mark_tag("Family/Grandma", [p, q], "rejected")  # `tags remove`
    scanned.mark_tag("dress", [p], "rejected")  # the photo has no tag left
    report = xmp.SidecarReport()
    list(scanned.export_tags_xmp(photos / "dress", report))
    assert (report.written, report.untagged) == (2, 1)
    emptied = keywords(Path(f"{first}.xmp"))
    assert all(values in ([], [""]) for values in emptied.values()), emptied
    assert keywords(Path(f"{second}.xmp")) == {
        "subject": ["Blue sky"],
        "tags_list": ["Blue sky"],
        "lr": ["Blue sky"],
    }
    again = xmp.SidecarReport()
    list(scanned.export_tags_xmp(photos / "dress", again))
    assert (again.written, again.unchanged, again.untagged) == (0, 1, 2)


def test_an_export_then_import_leaves_the_models_guesses_as_guesses(
    tagged: Clipdesk, photos: Path
) -> None:
    every = sorted(photos.rglob("*.jpg"))
    ids = [_id(tagged, p) for p in every]
    guesses = sum(len(ts) for ts in tagged.tags_of(ids).values())
    assert guesses  # (the test) the model gave tags
    tagged.mark_tag("Holidays", ids[:1], "manual")
    list(tagged.export_tags_xmp(photos, xmp.SidecarReport()))
    report = xmp.ImportReport()
    list(tagged.import_tags(photos, report))
    assert (report.added, report.already, report.from_model) == (0, 1, guesses)
    after = tagged.tags_of(ids)
    assert {t.source for ts in after.values() for t in ts} == {tag_rule.AUTO, tag_rule.MANUAL}
