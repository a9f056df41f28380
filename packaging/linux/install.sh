#!/bin/sh
# Install (or upgrade) clipdesk for the current user, from the unpacked archive:
#   the app in ~/.local/share/clipdesk-app/VERSION, the command ~/.local/bin/clipdesk,
#   a menu entry and the icon. No root, nothing outside your home folder.
# Your library (~/.local/share/clipdesk: database, index, models) and your photos are not
# touched: an upgrade keeps using them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data="${XDG_DATA_HOME:-$HOME/.local/share}"
dest="$data/clipdesk-app"
bin="$HOME/.local/bin"
app_id=io.github.clipdesk.Clipdesk
version=$(cat "$here/VERSION")

mkdir -p "$dest" "$bin" "$data/applications"
# Copy beside the running version, then switch: an interrupted upgrade leaves the old one.
rm -rf "$dest/.$version.new"
cp -R "$here/app" "$dest/.$version.new"
rm -rf "$dest/$version"
mv "$dest/.$version.new" "$dest/$version"
ln -sfn "$version" "$dest/current"
cp "$here/uninstall.sh" "$dest/uninstall.sh"
for old in "$dest"/*; do  # older versions, once the new one is in place
    name=$(basename "$old")
    case "$name" in current|uninstall.sh|"$version") ;; *) rm -rf "$old" ;; esac
done
ln -sfn "$dest/current/clipdesk" "$bin/clipdesk"

icons="$dest/current/_internal/resources/icons"
for size in 16 24 32 48 64 128 256 512; do
    target="$data/icons/hicolor/${size}x${size}/apps"
    mkdir -p "$target"
    cp "$icons/clipdesk-$size.png" "$target/$app_id.png"
done
mkdir -p "$data/icons/hicolor/scalable/apps"
cp "$icons/clipdesk.svg" "$data/icons/hicolor/scalable/apps/$app_id.svg"
sed -e "s|^Exec=clipdesk|Exec=$dest/current/clipdesk|" \
    -e "s|^TryExec=clipdesk|TryExec=$dest/current/clipdesk|" \
    "$here/$app_id.desktop" > "$data/applications/$app_id.desktop"
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$data/applications" || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
fi

echo "clipdesk $version is installed: find it in your applications menu, or run $bin/clipdesk"
case ":$PATH:" in *":$bin:"*) ;; *) echo "(add $bin to your PATH to run 'clipdesk' by name)" ;; esac
echo "To remove it: $dest/uninstall.sh (your library and photos stay)"
