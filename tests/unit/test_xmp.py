"""XMP sidecars for digiKam, darktable and Lightroom (clipdesk.tagging.xmp), checked with an
independent reader: exiftool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clipdesk.tagging import xmp
from tests.helpers import fixture_photo_paths

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="needs exiftool")

KEYWORD_FIELDS = ["-XMP-dc:Subject", "-XMP-digiKam:TagsList", "-XMP-lr:HierarchicalSubject"]
# A sidecar another app wrote: a rating, a description in two languages, darktable's
# history (a custom namespace with an array of structures) and a keyword of its own.
DARKTABLE_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    darktable:xmp_version="5"
    darktable:auto_presets_applied="1">
   <dc:description><rdf:Alt>
     <rdf:li xml:lang="x-default">A day out</rdf:li>
     <rdf:li xml:lang="fr-FR">Une sortie</rdf:li>
   </rdf:Alt></dc:description>
   <dc:subject><rdf:Bag><rdf:li>old keyword</rdf:li></rdf:Bag></dc:subject>
   <darktable:history><rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1" darktable:params="0000a0"/>
     <rdf:li darktable:operation="crop" darktable:enabled="0" darktable:params="ff00"/>
   </rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def exiftool(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["exiftool", "-j", "-struct", *args], capture_output=True, text=True, check=True
    )
    rows = json.loads(out.stdout)
    assert isinstance(rows[0], dict)
    return rows[0]


def keywords(path: Path) -> dict[str, list[str]]:
    """The three keyword fields as exiftool reads them (a lone value as a list of one)."""
    got = exiftool(*KEYWORD_FIELDS, str(path))
    names = {"Subject": "subject", "TagsList": "tags_list", "HierarchicalSubject": "lr"}
    return {
        ours: (got[theirs] if isinstance(got[theirs], list) else [got[theirs]])
        for theirs, ours in names.items()
        if theirs in got
    }


def other_fields(path: Path) -> dict[str, Any]:
    """Every field exiftool reads but the keywords and the file's own facts."""
    got = exiftool("-G1", "-XMP:all", str(path))
    dropped = {"XMP-dc:Subject", "XMP-digiKam:TagsList", "XMP-lr:HierarchicalSubject"}
    return {k: v for k, v in got.items() if k not in dropped and k != "SourceFile"}


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    target = tmp_path / "IMG_1.jpg"
    shutil.copyfile(fixture_photo_paths()[0], target)
    return target


def test_a_new_sidecar_is_read_back_by_exiftool_and_by_import(photo: Path) -> None:
    before = (photo.read_bytes(), photo.stat().st_mtime_ns)
    target = xmp.sidecar_to_write(str(photo), stems_shared=False)
    assert target == str(photo) + ".xmp"  # digiKam's and darktable's name
    assert xmp.write_sidecar(target, ["Places/France/Paris", "hat", "Blue sky"])
    assert keywords(Path(target)) == {
        "subject": ["Paris", "hat", "Blue sky"],
        "tags_list": ["Places/France/Paris", "hat", "Blue sky"],
        "lr": ["Places|France|Paris", "hat", "Blue sky"],
    }
    assert xmp.read_photo_tags(str(photo)) == (["Places/France/Paris", "hat", "Blue sky"], [])
    assert (photo.read_bytes(), photo.stat().st_mtime_ns) == before  # never written
    assert sorted(p.name for p in photo.parent.iterdir()) == ["IMG_1.jpg", "IMG_1.jpg.xmp"]


def test_an_existing_sidecar_keeps_every_other_field_and_its_keywords(photo: Path) -> None:
    sidecar = Path(str(photo) + ".xmp")
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    os.chmod(sidecar, 0o640)
    others = other_fields(sidecar)
    assert others["XMP-xmp:Rating"] == 4 and "XMP-darktable:History" in others  # (the test)
    assert xmp.write_sidecar(str(sidecar), ["People/Agnès", "old keyword"])
    assert other_fields(sidecar) == others
    assert keywords(sidecar) == {
        "subject": ["old keyword", "Agnès"],  # a union: what was there stays first
        "tags_list": ["People/Agnès", "old keyword"],
        "lr": ["People|Agnès", "old keyword"],
    }
    assert sidecar.stat().st_mode & 0o777 == 0o640  # as the user had it
    again = sidecar.read_bytes()
    assert not xmp.write_sidecar(str(sidecar), ["People/Agnès"])  # nothing new: untouched
    assert sidecar.read_bytes() == again
    assert sorted(p.name for p in photo.parent.iterdir()) == ["IMG_1.jpg", "IMG_1.jpg.xmp"]


def test_a_sidecar_exiv2_cannot_read_is_left_as_it_was(photo: Path) -> None:
    sidecar = Path(str(photo) + ".xmp")
    sidecar.write_bytes(b"not xmp at all\n")
    with pytest.raises(xmp.SidecarError):
        xmp.write_sidecar(str(sidecar), ["hat"])
    assert sidecar.read_bytes() == b"not xmp at all\n"
    assert sorted(p.name for p in photo.parent.iterdir()) == ["IMG_1.jpg", "IMG_1.jpg.xmp"]


def test_an_unreadable_sidecar_is_reported_and_the_photos_own_keywords_still_read(
    photo: Path,
) -> None:
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject=beach", str(photo)],
        check=True,
    )
    Path(f"{photo}.xmp").write_bytes(b"not xmp at all\n")
    tags, problems = xmp.read_photo_tags(str(photo))
    assert tags == ["beach"]
    assert len(problems) == 1 and problems[0].startswith("IMG_1.jpg.xmp: cannot read")


def test_lightrooms_sidecar_is_used_when_it_is_the_photos_alone(photo: Path) -> None:
    lightroom = photo.with_suffix(".xmp")
    lightroom.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    assert xmp.sidecar_to_write(str(photo), stems_shared=False) == str(lightroom)
    # IMG_1.jpg beside IMG_1.cr2: Lightroom's IMG_1.xmp is the raw's, not the JPEG's.
    assert xmp.sidecar_to_write(str(photo), stems_shared=True) == str(photo) + ".xmp"
    Path(str(photo) + ".xmp").write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    assert xmp.existing_sidecars(str(photo)) == [str(photo) + ".xmp", str(lightroom)]


def test_keywords_of_other_apps_become_tags() -> None:
    # Lightroom writes each level to dc:subject, digiKam the leaf: neither is a tag of
    # its own; a flat keyword is; darktable's own tags are left out.
    assert xmp.tags_from_keywords(
        subject=["Places", "France", "Paris", "sunset"],
        hierarchical=["Places|France|Paris", "darktable|format|cr2"],
        tags_list=["Places/France/Paris"],
        iptc=["sunset", "Grandma"],
    ) == ["Places/France/Paris", "sunset", "Grandma"]


def test_embedded_xmp_and_iptc_are_read_without_touching_the_photo(photo: Path) -> None:
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-overwrite_original",
            "-XMP-dc:Subject=beach",
            "-XMP-lr:HierarchicalSubject=Trips|Crete",
            "-IPTC:Keywords=summer",
            "-IPTC:Keywords=Crete",
            "-codedcharacterset=utf8",
            str(photo),
        ],
        check=True,
    )
    Path(photo.with_suffix(".xmp")).write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    before = (photo.read_bytes(), photo.stat().st_mtime_ns)
    tags = ["old keyword", "Trips/Crete", "beach", "summer"]
    assert xmp.read_photo_tags(str(photo)) == (tags, [])
    assert (photo.read_bytes(), photo.stat().st_mtime_ns) == before


def test_rejected_keywords_are_taken_out_and_every_other_one_kept(photo: Path) -> None:
    sidecar = Path(str(photo) + ".xmp")
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    others = other_fields(sidecar)
    xmp.write_sidecar(str(sidecar), ["Family/Grandma", "dress", "People/Grandma"])
    assert xmp.write_sidecar(str(sidecar), [], remove=["Family/Grandma", "dress"])
    assert keywords(sidecar) == {
        # "Grandma" stays in dc:subject: People/Grandma, not rejected, gives it too.
        "subject": ["old keyword", "Grandma"],
        "tags_list": ["People/Grandma"],
        "lr": ["People|Grandma"],
    }
    assert other_fields(sidecar) == others
    assert not xmp.write_sidecar(str(sidecar), [], remove=["dress"])  # nothing left to take
    missing = Path(str(photo) + ".other.xmp")
    assert not xmp.write_sidecar(str(missing), [], remove=["dress"]) and not missing.exists()


def test_a_broken_sidecars_error_names_the_sidecar_not_a_temporary_file(photo: Path) -> None:
    sidecar = Path(str(photo) + ".xmp")
    sidecar.write_bytes(b"not xmp at all\n")
    with pytest.raises(xmp.SidecarError) as caught:
        xmp.write_sidecar(str(sidecar), ["hat"])
    assert ".tmp" not in str(caught.value)
    assert str(caught.value).startswith("IMG_1.jpg.xmp is no XMP that exiv2 reads")


def test_a_sidecar_that_is_a_link_is_written_through_to_its_target(
    photo: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "elsewhere"
    kept.mkdir()
    real = kept / "IMG_1.jpg.xmp"
    real.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    link = Path(str(photo) + ".xmp")
    link.symlink_to(real)
    assert xmp.write_sidecar(str(link), ["hat"])
    assert link.is_symlink() and link.resolve() == real  # still the user's link
    assert keywords(real)["subject"] == ["old keyword", "hat"]
    assert sorted(p.name for p in kept.iterdir()) == ["IMG_1.jpg.xmp"]  # no stray copy
    real.unlink()  # a link to nothing: refused, nothing made
    with pytest.raises(xmp.SidecarError, match=r"is a link to .* which is not there"):
        xmp.write_sidecar(str(link), ["hat"])
    assert not real.exists()
