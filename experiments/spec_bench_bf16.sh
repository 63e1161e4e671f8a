#!/usr/bin/env bash
# Every method x {fixed, svip} (pld: fixed, heuristic) on the Spec-Bench subset, bf16, greedy, against ONE
# shared AR baseline (run first), one job at a time: speedups with 95% intervals and the exact / tie /
# mismatch counts of every record. Records under results/experiments/spec_bench_bf16/<pair>/.
#   bash experiments/spec_bench_bf16.sh            (LIMIT=4 per category, TOKENS=128, PAIR=smollm2)
# A re-run needs a new OUT (records resume: an existing run dir is completed, not redone). EXTRA: more runs
# ("method policy" pairs); PAIR_ARGS: Hydra overrides for every run (e.g. a candidate draft's path).
set -euo pipefail
PY=${PY:-python}
PAIR=${PAIR:-smollm2}
LIMIT=${LIMIT:-4}
TOKENS=${TOKENS:-128}
OUT=${OUT:-results/experiments/spec_bench_bf16/$PAIR}
ANALYSIS=${ANALYSIS:-results/analysis/spec_bench_bf16/$PAIR}
common=(pair=$PAIR benchmark=spec_bench benchmark.limit=$LIMIT max_new_tokens=$TOKENS dtype=bfloat16 progress=false ${PAIR_ARGS:-})
$PY -m svbench method=ar "${common[@]}" hydra.run.dir=$OUT/ar
runs=("pld fixed" "pld heuristic" "eagle2_cpu svip" "eagle2_cpu fixed" "vanilla_sd svip" "vanilla_sd fixed"
      "glide svip" "glide fixed" "glide_cape svip" "glide_cape fixed" "eagle2 svip" "eagle2 fixed")
if [ -n "${EXTRA:-}" ]; then IFS=',' read -ra extra <<< "$EXTRA"; runs+=("${extra[@]}"); fi
for run in "${runs[@]}"; do
  set -- $run
  $PY -m svbench method=$1 policy=$2 "${common[@]}" "baseline_records=[$OUT/ar/records.jsonl]" \
    hydra.run.dir=$OUT/$1-$2
done
$PY -m svbench.analysis $OUT --out $ANALYSIS
