#!/usr/bin/env bash
# The ship rule for a trained SmolLM2 draft (issue 14): a candidate replaces the shipped draft only if it beats
# it on held-out tau AND on Spec-Bench speed. This measures both, one after the other with nothing else running:
#   1. svbench.train.eval on the same held-out and Spec-Bench starts for both drafts (tau(gamma), cost);
#   2. AR once, then the shipped and the candidate draft under the same method + svip, both against that one
#      AR run (baseline_records), on LIMIT questions per Spec-Bench category x TOKENS new tokens, in ABBA order:
#      the first half of each category's questions shipped then candidate, the second half candidate then
#      shipped (each run dir resumes where the half stopped), so a machine that drifts steadily while the runs
#      go on shifts both drafts alike instead of the one that runs second (session 14: 9% more verify time per
#      round in the second run for the same tree);
#   3. with FIXED=1, step 2 again for the issue's fixed-length goal configuration of the same draft (draft_lm:
#      vanilla_sd, gamma 5; glide: glide, gamma 4; eagle: eagle2, the official 60-node tree; eagle3: eagle3, the
#      same tree), also ABBA: svip on the CPU tree can hide a better draft (session 15: svip stops the 12-node
#      tree after one level in ~95% of rounds, while the official tree resolved +0.12 tau);
#   4. svbench.analysis: every table of the runs; at the end `svbench.train.eval compare` prints the eval's
#      tau(gamma) difference and `svbench.analysis compare` the runs' speedup / tau difference, candidate
#      against shipped, each paired, with its interval and verdict.
# Usage: bash experiments/draft_candidate.sh KIND CANDIDATE_DIR NAME
#   KIND: draft_lm (vanilla_sd + svip) | glide (glide_cape + svip) | eagle (eagle2_cpu + svip) | eagle3 (eagle3_cpu + svip)
#   writes results/experiments/NAME/smollm2/{ar,<method>-svip-shipped,<method>-svip-candidate,eval-*.json}
#   (with FIXED=1 also <fixed method>-fixed-shipped, <fixed method>-fixed-candidate)
#   and results/analysis/NAME/smollm2/. LIMIT (4), TOKENS (128), HELDOUT_SEQS (40),
#   SPEC_BENCH (24 first turns), FIXED (0; 1 adds step 3), PY (python) from the environment.
set -euo pipefail
usage="usage: bash experiments/draft_candidate.sh draft_lm|glide|eagle|eagle3 CANDIDATE_DIR NAME"
[ $# -eq 3 ] || { echo "$usage" >&2; exit 2; }
KIND=$1 CANDIDATE=$2 NAME=$3
case $KIND in  # eval method, pair entry, shipped folder, svip run method, fixed run method (policy.gamma: its default)
  draft_lm) EVAL=vanilla_sd KEY=draft  SHIPPED=drafts/smollm2-135m-draft-lm RUN=vanilla_sd FIXED_RUN=vanilla_sd ;;
  glide)    EVAL=glide      KEY=glide  SHIPPED=drafts/smollm2-135m-glide    RUN=glide_cape FIXED_RUN=glide ;;
  eagle)    EVAL=eagle2     KEY=eagle  SHIPPED=drafts/smollm2-135m-eagle    RUN=eagle2_cpu FIXED_RUN=eagle2 ;;
  eagle3)   EVAL=eagle3     KEY=eagle3 SHIPPED=drafts/smollm2-135m-eagle3   RUN=eagle3_cpu FIXED_RUN=eagle3 ;;
  *) echo "unknown KIND '$KIND'; $usage" >&2; exit 2 ;;
esac
[[ "$NAME" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "NAME '$NAME': letters, digits, . _ - only (a folder name)" >&2; exit 2; }
LIMIT=${LIMIT:-4}
source "$(dirname "$0")/checks.sh"
positive_int LIMIT "$LIMIT" "questions per Spec-Bench category"
FIXED=${FIXED:-0}
[[ "$FIXED" =~ ^[01]$ ]] || { echo "FIXED '$FIXED': 0 or 1 (1: also the fixed-length goal configuration)" >&2; exit 2; }
[ -f "$CANDIDATE/config.json" ] || { echo "no draft at '$CANDIDATE' (config.json missing)" >&2; exit 2; }
PY=${PY:-python}
OUT=results/experiments/$NAME/smollm2
mkdir -p "$OUT"
declare -A FOLDER=([shipped]=$SHIPPED [candidate]=$CANDIDATE)
# an eval JSON already there is kept (a re-run resumes): one NAME per candidate; delete eval-*.json to re-measure.
# One without per-start lengths (written before they were stored) is re-measured: the tau verdict pairs them.
for who in shipped candidate; do
  grep -qs '"starts"' "$OUT/eval-$who.json" && { echo "kept $OUT/eval-$who.json" >&2; continue; }
  $PY -m svbench.train.eval --method $EVAL --pair smollm2 --draft "${FOLDER[$who]}" --data train_data/smollm2 \
    --heldout-seqs ${HELDOUT_SEQS:-40} --starts-per-seq 6 --spec-bench ${SPEC_BENCH:-24} --out "$OUT/eval-$who.json"
done
COMMON="pair=smollm2 benchmark=spec_bench max_new_tokens=${TOKENS:-128} dtype=bfloat16 progress=false"
$PY -m svbench method=ar $COMMON benchmark.limit=$LIMIT hydra.run.dir=$OUT/ar
HALF=$(( LIMIT / 2 ))  # questions per category in the first half (0: LIMIT 1, plain order)
run() {  # run WHO Q METHOD POLICY: the WHO draft on the first Q questions per category; its dir keeps what it has
  $PY -m svbench method=$3 policy=$4 $COMMON benchmark.limit=$2 pair.$KEY.path="${FOLDER[$1]}" \
    "baseline_records=[$OUT/ar/records.jsonl]" hydra.run.dir=$OUT/$3-$4-$1
}
abba() {  # abba METHOD POLICY
  if [ $HALF -gt 0 ]; then run shipped $HALF "$@"; run candidate $HALF "$@"; fi
  run candidate $LIMIT "$@"
  run shipped $LIMIT "$@"
}
abba $RUN svip
[ "$FIXED" = 0 ] || abba $FIXED_RUN fixed
$PY -m svbench.analysis "$OUT" --out results/analysis/$NAME/smollm2
# the verdict: candidate against shipped, paired on the question-turns both ran (diff = candidate - shipped)
$PY -m svbench.analysis compare "$OUT/$RUN-svip-shipped" "$OUT/$RUN-svip-candidate"
[ "$FIXED" = 0 ] || $PY -m svbench.analysis compare "$OUT/$FIXED_RUN-fixed-shipped" "$OUT/$FIXED_RUN-fixed-candidate"
# tau(1..8) of each draft on the same starts and candidate - shipped with its interval (per split)
$PY -m svbench.train.eval compare "$OUT/eval-shipped.json" "$OUT/eval-candidate.json"
