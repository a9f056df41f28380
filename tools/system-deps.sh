#!/usr/bin/env bash
# The system libraries Qt needs on Debian/Ubuntu, Xvfb for the real-window test and qemu-user
# (tests/e2e/test_bundle.py runs the bundle on an emulated CPU without AVX-512) and exiftool
# (the XMP tests read sidecars back with an independent reader).
# Installs only what is missing; does nothing elsewhere (macOS, Windows, other distros
# where the packages are named differently: install Qt's xcb dependencies by hand).
set -euo pipefail
[ "$(uname -s)" = "Linux" ] || exit 0
command -v apt-get >/dev/null || { echo "system-deps: no apt-get; skipping" >&2; exit 0; }
PACKAGES="xvfb xauth libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1
  libxcb-image0 libxcb-render-util0 libxcb-xinerama0 libxcb-shape0 libegl1 libgl1
  libfontconfig1 libdbus-1-3 fonts-dejavu-core desktop-file-utils qemu-user
  libimage-exiftool-perl"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "system-deps: installing$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
