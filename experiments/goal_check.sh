#!/usr/bin/env bash
# Issue 14's speed goals measured so that the machine's state cannot pick the verdict: every configuration
# times its OWN AR right before it on every question-turn (the runner's default: no baseline_records), and
# every question-turn RUNS times (runs=RUNS; the analysis resamples a question-turn's runs as one cluster).
# spec_bench_bf16.sh shares one AR run across all methods, which is cheaper but lets a change of machine state
# between the AR run and a method's run move that method's speedup: session 30 measured eagle2_cpu + svip at
# 1.148x and 1.449x in two such runs minutes apart, with identical ids and tau.
#   bash experiments/goal_check.sh        (LIMIT=4 per Spec-Bench category: 28 question-turns, TOKENS=128, RUNS=2)
# CONFIGS: comma-separated "method policy" pairs (default: the goal configurations below). OUT must be new or
# an interrupted run of the same settings (run dirs resume). PY (python), PAIR (smollm2), EXTRA (more Hydra
# overrides for every run) from the environment.
set -euo pipefail
PY=${PY:-python}
LIMIT=${LIMIT:-4}
TOKENS=${TOKENS:-128}
RUNS=${RUNS:-2}
source "$(dirname "$0")/checks.sh"
positive_int LIMIT "$LIMIT" "questions per Spec-Bench category"
positive_int RUNS "$RUNS" "repeats of every question-turn"
PAIR=${PAIR:-smollm2}
OUT=${OUT:-results/experiments/goal_check/$PAIR}
ANALYSIS=${ANALYSIS:-results/analysis/goal_check/$PAIR}
# the goals: eagle2_cpu + svip >= 1.8x, vanilla_sd + svip >= 1.4x, glide_cape + svip >= 1.5x; eagle2 fixed for tau
IFS=',' read -ra configs <<< "${CONFIGS:-eagle2_cpu svip,vanilla_sd svip,glide_cape svip,eagle2 fixed}"
for config in "${configs[@]}"; do  # every entry checked before anything runs
  set -- $config
  [ $# -eq 2 ] || { echo "CONFIGS entry '$config': one method and one policy, e.g. 'eagle2_cpu svip'" >&2; exit 2; }
done
for config in "${configs[@]}"; do
  set -- $config
  $PY -m svbench method=$1 policy=$2 pair=$PAIR benchmark=spec_bench benchmark.limit=$LIMIT \
    max_new_tokens=$TOKENS runs=$RUNS dtype=bfloat16 progress=false ${EXTRA:-} hydra.run.dir=$OUT/$1-$2
done
$PY -m svbench.analysis $OUT --out $ANALYSIS
