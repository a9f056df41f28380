#!/usr/bin/env bash
# Here (no GPU), once per session that has a lent GPU machine: puts into .whl/ (ignored by
# git) the packages clipdesk needs that the device image lacks, for its Python 3.12.
# Then one device call runs tools/device_check.sh (see bench/README.md, "On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in open_clip_torch ftfy wcwidth sqlalchemy greenlet typing_extensions platformdirs simplejpeg; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$pkg" 2>&1 | grep -v 'is ignored' || true
done
# hnswlib publishes no wheel for 3.12: build one with a local Python 3.12, without
# -march=native (the device's CPU is not this one).
if ! ls .whl/hnswlib-*-cp312-*.whl >/dev/null 2>&1; then
  py312=""
  for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      py312=$candidate
      break
    fi
  done
  [ -n "$py312" ] || { echo "need a Python 3.12 to build hnswlib's wheel" >&2; exit 1; }
  HNSWLIB_NO_NATIVE=1 "$py312" -m pip wheel -q --no-deps hnswlib==0.8.0 -w .whl
fi
ls -1 .whl && du -sh .whl
