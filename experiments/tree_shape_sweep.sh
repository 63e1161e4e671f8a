#!/usr/bin/env bash
# EAGLE-2 tree shapes x length policies against one AR baseline, on a question split chosen for tuning
# (default: Spec-Bench questions 5-8 of each category, benchmark.skip=4 limit=4, disjoint from the goals'
# limit=4 questions), so that the shape picked here is then measured on questions it was not picked on.
# AR runs before every draft configuration (each is timed against it) and again after all of them into
# results/experiments/NAME/ar-end, outside the analysed folder: the two AR speeds printed at the end say how
# far the machine drifted during the sweep (a drift larger than the configurations' differences voids them).
# Usage: bash experiments/tree_shape_sweep.sh NAME [CONFIG ...]
#   CONFIG: POLICY:TOP_K:DEPTH:NODES[:H] (H: svip's h, default the official 0.3), e.g. svip:4:3:12 fixed:8:4:32
#   writes results/experiments/NAME/smollm2/{ar,eagle2-POLICY-kTOP_K-dDEPTH-nNODES[-hH]} and
#   results/analysis/NAME/smollm2/. SKIP (4), LIMIT (4), TOKENS (128), PY (.venv/bin/python) from the environment;
#   EXTRA: more overrides for every run, AR included (e.g. EXTRA=linear=onednn).
set -euo pipefail
NAME=${1:?usage: bash experiments/tree_shape_sweep.sh NAME [POLICY:TOP_K:DEPTH:NODES[:H] ...]}
shift
CONFIGS=${*:-svip:4:3:12 svip:6:4:20 svip:8:4:32 svip:10:5:60 fixed:4:3:12 fixed:6:4:20 fixed:8:4:32 svip:4:3:12:0.45 svip:8:4:32:0.45}
PY=${PY:-.venv/bin/python} SKIP=${SKIP:-4} LIMIT=${LIMIT:-4}
source "$(dirname "$0")/checks.sh"
positive_int LIMIT "$LIMIT" "questions per Spec-Bench category"
OUT=results/experiments/$NAME/smollm2
COMMON="pair=smollm2 benchmark=spec_bench max_new_tokens=${TOKENS:-128} dtype=bfloat16 progress=false benchmark.skip=$SKIP ${EXTRA:-}"
for c in $CONFIGS; do  # every CONFIG checked before anything runs
  IFS=: read -r policy k d n h rest <<< "$c"
  [[ "$policy" =~ ^(svip|fixed|heuristic|confidence)$ && "$k" =~ ^[1-9][0-9]*$ && "$d" =~ ^[1-9][0-9]*$ \
     && "$n" =~ ^[1-9][0-9]*$ && -z "$rest" && ( -z "$h" || ( "$policy" == svip && "$h" =~ ^[0-9]*\.?[0-9]+$ ) ) ]] \
    || { echo "bad CONFIG '$c': POLICY:TOP_K:DEPTH:NODES[:H], H for svip only" >&2; exit 2; }
done
$PY -m svbench method=ar $COMMON benchmark.limit=$LIMIT hydra.run.dir=$OUT/ar
for c in $CONFIGS; do
  IFS=: read -r policy k d n h <<< "$c"
  extra=() dir=eagle2-$policy-k$k-d$d-n$n
  [ -z "$h" ] || { extra=(policy.h=$h); dir=$dir-h$h; }
  $PY -m svbench method=eagle2 policy=$policy $COMMON benchmark.limit=$LIMIT method.drafter.top_k=$k \
    method.drafter.depth=$d method.drafter.total_token=$n "${extra[@]}" "baseline_records=[$OUT/ar/records.jsonl]" \
    hydra.run.dir=$OUT/$dir
done
$PY -m svbench method=ar $COMMON benchmark.limit=$LIMIT hydra.run.dir=results/experiments/$NAME/ar-end
$PY - "$OUT/ar/records.jsonl" "results/experiments/$NAME/ar-end/records.jsonl" <<'EOF'
import json, sys
for path in sys.argv[1:]:  # AR tokens/s pooled over the questions, at the sweep's start and at its end
    rs = [json.loads(line) for line in open(path)]
    print(f"AR {path}: {sum(r['new_tokens'] for r in rs) / sum(r['wall_time'] for r in rs):.2f} tok/s")
EOF
$PY -m svbench.analysis "$OUT" --out results/analysis/$NAME/smollm2
