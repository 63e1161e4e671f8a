#!/usr/bin/env bash
# Every method x {fixed, svip} (pld: fixed, heuristic) on the Spec-Bench subset, bf16, greedy, against ONE
# shared AR baseline (run first), one job at a time: speedups with 95% intervals and the exact / tie /
# mismatch counts of every record. Records under results/experiments/spec_bench_bf16/<pair>/.
#   bash experiments/spec_bench_bf16.sh            (LIMIT=4 per category, TOKENS=128, PAIR=smollm2)
set -euo pipefail
PY=${PY:-python}
PAIR=${PAIR:-smollm2}
LIMIT=${LIMIT:-4}
TOKENS=${TOKENS:-128}
OUT=results/experiments/spec_bench_bf16/$PAIR
common=(pair=$PAIR benchmark=spec_bench benchmark.limit=$LIMIT max_new_tokens=$TOKENS dtype=bfloat16 progress=false)
$PY -m svbench method=ar "${common[@]}" hydra.run.dir=$OUT/ar
runs=("pld fixed" "pld heuristic" "eagle2_cpu svip" "eagle2_cpu fixed" "vanilla_sd svip" "vanilla_sd fixed"
      "glide svip" "glide fixed" "glide_cape svip" "glide_cape fixed" "eagle2 svip" "eagle2 fixed")
for run in "${runs[@]}"; do
  set -- $run
  $PY -m svbench method=$1 policy=$2 "${common[@]}" "baseline_records=[$OUT/ar/records.jsonl]" \
    hydra.run.dir=$OUT/$1-$2
done
$PY -m svbench.analysis $OUT --out results/analysis/spec_bench_bf16/$PAIR
