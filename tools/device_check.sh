#!/usr/bin/env bash
# On a lent GPU machine (the `device` tool), from the repository root, as ONE call:
#   tools/fetch_device_wheels.sh                      # here, first
#   run(command="bash tools/device_check.sh", carry=[".whl"], timeout_s=540)
# Installs the carried wheels, then prints the GPU figures issue 6 asks for (bench_gpu.py:
# raw fp16 forward and the whole pipeline on 12 MP JPEGs, photos/s) and runs the tests that
# exercise the CUDA path. Everything also lands in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CLIPDESK_AUTO_EXPORT=0
OUT=${OUT:-/tmp/clipdesk-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"
timeout 330 python3 bench/bench_gpu.py --photos "${PHOTOS:-2048}" 2>&1 | tee "$OUT/bench_gpu.txt"
# -c /dev/null: the project's pytest settings name pytest-qt, which the device lacks
timeout 200 python3 -m pytest -q -rs -c /dev/null --rootdir "$PWD" -p no:cacheprovider \
  tests/unit/test_cuda.py tests/unit/test_devices.py tests/unit/test_backends.py 2>&1 |
  tail -30 | tee "$OUT/pytest.txt"
