#!/usr/bin/env bash
# Pack dist/clipdesk.app into dist/clipdesk-VERSION-macos-ARCH.dmg: a disk image holding the
# app and a link to /Applications (drag to install). macOS only; see packaging/macos/README.md.
#
#   packaging/macos/make_dmg.sh [VERSION]
#
# VERSION defaults to the app's CFBundleShortVersionString; ARCH is the executable's
# architecture (arm64, x86_64, or universal2). If CODESIGN_IDENTITY is set (e.g.
# "Developer ID Application: Name (TEAMID)"), the .dmg is signed with it. Sign the .app
# itself first (PyInstaller, see the README). Only dist/ is written.
# NOT TRIED: written on Linux; never run on a Mac.
set -euo pipefail

if [ "$(uname -s)" != "Darwin" ]; then
    echo "make_dmg.sh: runs on macOS only (it needs hdiutil); this is $(uname -s)." >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/../.." && pwd)
app="$repo/dist/clipdesk.app"
if [ ! -d "$app" ]; then
    echo "make_dmg.sh: $app is missing: build it first (packaging/build.py with the BUNDLE step)." >&2
    exit 1
fi
exe="$app/Contents/MacOS/clipdesk"

version="${1:-}"
if [ -z "$version" ]; then
    version=$(/usr/libexec/PlistBuddy -c "Print :CFBundleShortVersionString" "$app/Contents/Info.plist")
fi

if command -v lipo >/dev/null 2>&1; then
    archs=$(lipo -archs "$exe")
else
    archs=$(uname -m)
fi
case "$archs" in
    *" "*) arch=universal2 ;;
    *) arch=$archs ;;
esac

dmg="$repo/dist/clipdesk-$version-macos-$arch.dmg"
staging=$(mktemp -d "${TMPDIR:-/tmp}/clipdesk-dmg.XXXXXX")
trap 'rm -rf "$staging"' EXIT

echo "[dmg] staging $app in $staging"
ditto "$app" "$staging/clipdesk.app"  # keeps symlinks, extended attributes and signatures
ln -s /Applications "$staging/Applications"

echo "[dmg] hdiutil create -volname clipdesk -srcfolder $staging -ov -format UDZO $dmg"
hdiutil create -volname clipdesk -srcfolder "$staging" -ov -format UDZO "$dmg"

if [ -n "${CODESIGN_IDENTITY:-}" ]; then
    echo "[dmg] signing $dmg as $CODESIGN_IDENTITY"
    codesign --force --sign "$CODESIGN_IDENTITY" --timestamp "$dmg"
else
    echo "[dmg] not signed (CODESIGN_IDENTITY is not set)"
fi

echo "[dmg] hdiutil verify $dmg"
hdiutil verify "$dmg"

echo "[dmg] made $dmg"
echo "[dmg]   clipdesk $version, $arch, $(du -h "$dmg" | cut -f1)"
echo "[dmg]   sha256 $(shasum -a 256 "$dmg" | cut -d' ' -f1)"
echo "[dmg] to notarize: xcrun notarytool submit \"$dmg\" --keychain-profile clipdesk-notary --wait"
echo "[dmg]   then:      xcrun stapler staple \"$dmg\""
