#!/usr/bin/env bash
# The GPU check (issue 13), one script: the decoding tests (losslessness, sampling law) with their models on
# the device, then experiments/gpu_check.py (every method x {fixed, svip} on a random ~1B Llama in float16 and
# bfloat16: ids vs AR, time split per round, syncs per round). ~11 minutes on an H200, estimated from
# results/gpu/README.md (tests 96 s with -n 8; each of the 28 check configurations ~19 s with AR timed beside
# it; machine start extra). The device tool allows 10 minutes a call: run PART=tests and PART=check
# DTYPES=float16 in one call, then PART=check DTYPES=bfloat16 while the machine is still warm.
# Results: $OUT/tests_$DEVICE.log, $OUT/gpu_check_$DEVICE.{json,md} ($OUT/gpu_check_${DEVICE}_<dtypes>.{json,md}
# when DTYPES is set).
#
#   bash experiments/gpu_check.sh                          # DEVICE=cuda SIZE=1b OUT=results/gpu
#   DEVICE=cpu SIZE=tiny bash experiments/gpu_check.sh     # how it is tested on a CPU (tests/test_gpu_check.py)
#   PART=tests | PART=check bash experiments/gpu_check.sh  # one half (default PART=all: both)
#   PART=check DTYPES=bfloat16 bash experiments/gpu_check.sh   # one dtype -> $OUT/gpu_check_cuda_bfloat16.{json,md}
#   TESTS="tests/test_lossless.py::test_x" bash experiments/gpu_check.sh   # other tests than the decoding files
#
# A device machine whose Python has torch (2.11+) but lacks some of svbench's dependencies: download their
# wheels where pip works, into a folder, and name it WHEELS. svbench needs transformers 5.24+ (models take
# `cache=`; svbench.decoding.kv_cache refuses older). The H200 image of 2026-11 had torch 2.11, transformers
# 5.17, pandas, scipy, tqdm, pytest, hypothesis, and none of hydra-core, omegaconf, antlr4, gguf:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl transformers==5.24.0 hydra-core==1.3.8 \
#     omegaconf==2.3.1 gguf==0.19.0
#   .venv/bin/pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # an sdist only: build its wheel
#   WHEELS=.whl bash experiments/gpu_check.sh
# (all pure-Python wheels, `py3-none-any`.) The tree sent must stay under the device tool's 64 MiB: move
# drafts/ aside for the call (the check uses random weights only).
set -euo pipefail
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1b}
OUT=${OUT:-results/gpu}
PY=${PY:-python3}
PART=${PART:-all}
case $PART in all|tests|check) ;; *) echo "PART '$PART': all, tests or check" >&2; exit 2 ;; esac
DTYPES=${DTYPES:-}; DTYPES=${DTYPES// /}  # "float16, bfloat16" -> "float16,bfloat16"
cd "$(dirname "$0")/.."
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/svbench-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/svbench-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$OUT"
status=0
if [ "$PART" != check ]; then
  XDIST=""  # on a GPU machine, 8 pytest-xdist workers where installed (the H200 image has it)
  [ "$DEVICE" = cuda ] && $PY -c "import xdist" 2>/dev/null && XDIST="-n 8"
  # TESTS: pytest's selection (default: the two decoding files; the CPU test picks one test, since `make test`
  # already runs them all on the CPU)
  SVBENCH_TEST_DEVICE=$DEVICE $PY -m pytest ${TESTS:-tests/test_lossless.py tests/test_sampling.py} -q \
    -p no:cacheprovider -m "not slow" $XDIST > "$OUT/tests_$DEVICE.log" 2>&1 || status=$?
  tail -n 1 "$OUT/tests_$DEVICE.log"
fi
if [ "$PART" != tests ]; then
  # DTYPES (float16,bfloat16 when unset) splits the check across calls; each part then gets its own file
  $PY experiments/gpu_check.py --device "$DEVICE" --size "$SIZE" --dtypes "${DTYPES:-float16,bfloat16}" \
    --out "$OUT/gpu_check_$DEVICE${DTYPES:+_${DTYPES//,/_}}"
fi
exit "$status"
