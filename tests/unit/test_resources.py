"""The desktop integration files: a launcher entry, AppStream metadata and the icons."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from clipdesk.cli.main import _parser
from tests.helpers import ROOT

LINUX = ROOT / "resources" / "linux"
APP_ID = "io.github.clipdesk.Clipdesk"


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(LINUX / f"{APP_ID}.desktop", encoding="utf-8")
    return parser["Desktop Entry"]


def test_the_launcher_runs_the_app_with_the_files_it_is_given() -> None:
    entry = _desktop_entry()
    assert entry["Type"] == "Application" and entry["Icon"] == APP_ID
    program, *arguments = shlex.split(entry["Exec"])
    assert program == "clipdesk"
    args = _parser().parse_args([a.replace("%F", "/photos/cat.jpg") for a in arguments])
    assert args.command == "gui" and args.images == ["/photos/cat.jpg"]


def test_the_metainfo_names_the_launcher_and_the_program() -> None:
    root = ET.parse(LINUX / f"{APP_ID}.metainfo.xml").getroot()
    assert root.findtext("id") == APP_ID
    assert root.findtext("launchable") == f"{APP_ID}.desktop"
    assert root.findtext("provides/binary") == "clipdesk"


def test_the_icon_exists_as_svg_and_in_the_usual_sizes() -> None:
    icons = ROOT / "resources" / "icons"
    assert (icons / "clipdesk.svg").is_file()
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        assert (icons / f"clipdesk-{size}.png").is_file()


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils")
def test_desktop_file_validate_accepts_the_launcher() -> None:
    result = subprocess.run(
        ["desktop-file-validate", str(LINUX / f"{APP_ID}.desktop")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
