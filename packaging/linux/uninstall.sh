#!/bin/sh
# Remove clipdesk installed by install.sh. Your photos are never touched. Your library
# (the database, search index, thumbnails and downloaded models in ~/.local/share/clipdesk)
# stays unless you pass --remove-library.
set -eu
data="${XDG_DATA_HOME:-$HOME/.local/share}"
dest="$data/clipdesk-app"
bin="$HOME/.local/bin"
app_id=io.github.clipdesk.Clipdesk
remove_library=no
for arg in "$@"; do
    case "$arg" in
        --remove-library) remove_library=yes ;;
        *) echo "usage: $0 [--remove-library]" >&2; exit 2 ;;
    esac
done

if [ -L "$bin/clipdesk" ] && readlink "$bin/clipdesk" | grep -q "clipdesk-app"; then
    rm -f "$bin/clipdesk"
fi
rm -f "$data/applications/$app_id.desktop"
for icon in "$data"/icons/hicolor/*/apps/"$app_id".png "$data/icons/hicolor/scalable/apps/$app_id.svg"; do
    rm -f "$icon"
done
rm -rf "$dest"
echo "clipdesk is removed."
library="$data/clipdesk"
if [ "$remove_library" = yes ]; then
    rm -rf "$library"
    echo "Removed the library $library (your photos were not touched)."
elif [ -d "$library" ]; then
    echo "Your library stays in $library (run with --remove-library to delete it; photos are never touched)."
fi
