#!/usr/bin/env bash
# The GPU check (issue 13), one script, under 8 minutes on an H100/H200: the decoding tests (losslessness,
# sampling law) with their models on the device, then experiments/gpu_check.py (every method x {fixed, svip}
# on a random ~1B Llama in float16 and bfloat16: ids vs AR, time split per round, syncs per round).
# Results: $OUT/tests_$DEVICE.log, $OUT/gpu_check_$DEVICE.{json,md}.
#
#   bash experiments/gpu_check.sh                          # DEVICE=cuda SIZE=1b OUT=results/gpu
#   DEVICE=cpu SIZE=tiny bash experiments/gpu_check.sh     # how it is tested on a CPU (tests/test_gpu_check.py)
#
# A device machine whose Python has torch (2.11+) and transformers (5.17+) but none of svbench's other
# dependencies: download their wheels where pip works, into a folder, and name it WHEELS:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl hydra-core omegaconf antlr4-python3-runtime==4.9.3 PyYAML gguf tqdm scipy numpy pandas \
#     python-dateutil pytz tzdata pytest pluggy iniconfig hypothesis sortedcontainers attrs
#   WHEELS=.whl bash experiments/gpu_check.sh
# (pure-Python wheels have no platform tag: pip download picks `py3-none-any` for them.)
set -euo pipefail
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1b}
OUT=${OUT:-results/gpu}
PY=${PY:-python3}
cd "$(dirname "$0")/.."
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/svbench-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/svbench-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$OUT"
status=0
SVBENCH_TEST_DEVICE=$DEVICE $PY -m pytest tests/test_lossless.py tests/test_sampling.py -q -p no:cacheprovider \
  -m "not slow" > "$OUT/tests_$DEVICE.log" 2>&1 || status=$?
tail -n 1 "$OUT/tests_$DEVICE.log"
$PY experiments/gpu_check.py --device "$DEVICE" --size "$SIZE" --out "$OUT/gpu_check_$DEVICE"
exit "$status"
