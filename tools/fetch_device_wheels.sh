#!/usr/bin/env bash
# Here (no GPU), once per session that has a lent GPU machine: puts into .whl/ (ignored by
# git) the packages clipdesk needs that the device image lacks, for its Python 3.12.
# Then one device call runs tools/device_check.sh (see bench/README.md, "On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
rm -rf .whl && mkdir .whl # one version of each: two stop the install there
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# the versions this project's venv runs (greenlet: SQLAlchemy's, for 3.12)
for pkg in open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 sqlalchemy==2.1.9 greenlet \
  typing_extensions==4.16.0 platformdirs==4.14.8 simplejpeg==1.9.0; do
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$pkg" 2>/tmp/fetch-wheel.err; then
    grep -v 'is ignored' /tmp/fetch-wheel.err >&2
    echo "could not fetch $pkg" >&2
    exit 1
  fi
done
# hnswlib publishes no wheel for 3.12: build one with a local Python 3.12, without
# -march=native (the device's CPU is not this one) and without pip's cache (a cached
# wheel may have been built with it).
py312=""
for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python python3.12; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    py312=$candidate
    break
  fi
done
[ -n "$py312" ] || { echo "need a Python 3.12 to build hnswlib's wheel" >&2; exit 1; }
HNSWLIB_NO_NATIVE=1 "$py312" -m pip wheel -q --no-deps --no-cache-dir hnswlib==0.8.0 -w .whl \
  2> >(grep -v 'is ignored' >&2)
ls -1 .whl && du -sh .whl
