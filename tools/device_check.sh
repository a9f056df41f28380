#!/usr/bin/env bash
# On a lent GPU machine (the `device` tool), from the repository root, as ONE call:
#   tools/fetch_device_wheels.sh                      # here, first
#   run(command="bash tools/device_check.sh", carry=[".whl"], timeout_s=540)
# Installs the carried wheels, runs the tests of the CUDA path (nvJPEG decoding included),
# then prints the GPU figures issue 6 asks for (bench_gpu.py: decode ceilings, raw fp16
# forward, the whole pipeline on 12 MP JPEGs decoding on the GPU and on the CPU, photos/s).
# Full logs land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CLIPDESK_AUTO_EXPORT=0
OUT=${OUT:-/tmp/clipdesk-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
echo "cpu cores: $(nproc)" | tee -a "$OUT/gpu.txt"
# the tests first: short, and they say whether the CUDA path works at all
# (-c /dev/null: the project's pytest settings name pytest-qt, which the device lacks)
timeout 150 python3 -m pytest -q -rP -rs -c /dev/null --rootdir "$PWD" -p no:cacheprovider \
  tests/unit/test_cuda.py tests/unit/test_devices.py tests/unit/test_backends.py \
  >"$OUT/pytest.txt" 2>&1
echo "pytest exit $?"
grep -E "min cosine|passed|failed|error|SKIPPED" "$OUT/pytest.txt" | tail -20
timeout 330 python3 bench/bench_gpu.py --photos "${PHOTOS:-1024}" 2>&1 | tee "$OUT/bench_gpu.txt"
