#!/usr/bin/env bash
# SVIP Tables 1-4 on a model pair (default: the CPU pair smollm2 with svbench's shipped drafts), each the
# Hydra multirun of conf/experiment/svip_table*.yaml, then the analysis (tables with 95% intervals,
# efficiency, oracle, comparisons, speedup plot) per table, plus a methods overview built from the runs of
# Tables 1, 3 and 4 (no method runs twice) and the papers' claims with verdicts (python -m svbench.analysis
# claims: $ANALYSIS/claims/PAIR.md).
#
# One AR baseline per table setting, timed right before the table's jobs and shared by them through
# baseline_records: Tables 1, 3 and 4 each one Spec-Bench AR run (the machine drifts by up to 10-20% within
# an hour, so a table's speedups are against an AR timed next to them); Table 2 one AR run per generation
# length. A job finds the AR record of each question-turn there and times only its own method (runner.py;
# AR is re-timed only where missing). The methods overview compares methods of different tables each
# against its own table's AR (paired by question-turn).
# One heavy job at a time, nothing else running. Re-running resumes: recorded question-turns are skipped.
# New drafts or a new protocol: remove $EXP/paper_ar/PAIR and $EXP/svip_table*/PAIR first (git keeps the old
# records); the claims step refuses two runs of one configuration side by side.
#   bash experiments/paper_tables.sh [svip_table1 svip_table3 svip_table4 svip_table2]
#   EAGLE3=1 ...      Table 4 also with the pair's EAGLE-3 head (eagle3, eagle3_cpu)
#   LIMIT=5 TOKENS=256 LONG_LIMIT=5 LENGTHS=128,512,2048,7900   (the defaults: issue 16's CPU protocol)
# On the papers' GPU pairs: PAIR=vicuna_7b_v1.5 LIMIT=null TOKENS=1024 EXTRA="device=cuda" bash ...
set -euo pipefail
PY=${PY:-python}
PAIR=${PAIR:-smollm2}
LIMIT=${LIMIT:-5}
TOKENS=${TOKENS:-256}
LONG_LIMIT=${LONG_LIMIT:-5}
LENGTHS=${LENGTHS:-128,512,2048,7900}
EXP=${EXP:-results/experiments}
ANALYSIS=${ANALYSIS:-results/analysis}
TABLES=${*:-svip_table1 svip_table3 svip_table4 svip_table2}
AR=$EXP/paper_ar/$PAIR
common=(pair=$PAIR progress=false ${EXTRA:-})
long=(benchmark.limit=$LONG_LIMIT max_new_tokens=$LENGTHS "baseline_records=['$AR/mt_bench_long/*/records.jsonl']")
table4_methods=eagle2,eagle2_cpu
if [ -n "${EAGLE3:-}" ]; then table4_methods=$table4_methods,eagle3,eagle3_cpu; fi

for table in $TABLES; do
  case $table in
    svip_table2)  # AR at every length first (T = 1 and EOS ignored: mt_bench_long's protocol)
      $PY -m svbench --multirun method=ar benchmark=mt_bench_long benchmark.limit=$LONG_LIMIT dtype=bfloat16 \
        max_new_tokens=$LENGTHS "${common[@]}" hydra.sweep.dir=$AR/mt_bench_long
      $PY -m svbench --multirun +experiment=$table "${long[@]}" "${common[@]}" hydra.sweep.dir=$EXP/$table/$PAIR ;;
    svip_table1|svip_table3|svip_table4)
      $PY -m svbench method=ar benchmark=spec_bench benchmark.limit=$LIMIT max_new_tokens=$TOKENS temperature=0.0 \
        dtype=bfloat16 "${common[@]}" hydra.run.dir=$AR/$table  # a re-run skips what is recorded
      spec=(benchmark.limit=$LIMIT max_new_tokens=$TOKENS "baseline_records=['$AR/$table/records.jsonl']")
      extra=()
      [ $table = svip_table4 ] && extra=(method=$table4_methods)
      $PY -m svbench --multirun +experiment=$table "${spec[@]}" "${extra[@]}" "${common[@]}" \
        hydra.sweep.dir=$EXP/$table/$PAIR ;;
    *) echo "paper_tables.sh: unknown table $table (svip_table1 .. svip_table4)" >&2; exit 2 ;;
  esac
  $PY -m svbench.analysis $EXP/$table/$PAIR --out $ANALYSIS/$table/$PAIR
done
overview=()
for table in svip_table1 svip_table3 svip_table4; do
  [ -d $EXP/$table/$PAIR ] && overview+=($EXP/$table/$PAIR)
done
if [ ${#overview[@]} -gt 0 ]; then
  $PY -m svbench.analysis "${overview[@]}" --out $ANALYSIS/methods_overview/$PAIR
fi
$PY -m svbench.analysis claims $EXP --pair $PAIR --out $ANALYSIS/claims/$PAIR.md  # each paper claim's verdict
