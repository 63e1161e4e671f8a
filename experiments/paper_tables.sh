#!/usr/bin/env bash
# SVIP Tables 1-4 on a model pair (default: the CPU pair smollm2 with svbench's trained drafts), each the
# Hydra multirun of conf/experiment/svip_table*.yaml (CPU subsets documented there), then the analysis
# tables/plots per table, plus a methods overview built from Tables 1, 3 and 4's runs (the same settings
# as +experiment=methods_overview, without running every method twice). Every job times its own AR
# baseline side by side, question by question. Re-running resumes: recorded question-turns are skipped.
#   CPU_TREE=1 bash experiments/paper_tables.sh [svip_table1 svip_table3 ...]
# On the papers' GPU pairs: PAIR=vicuna_7b_v1.5 EXTRA="device=cuda benchmark.limit=null" bash ...
set -euo pipefail
PY=${PY:-python}
PAIR=${PAIR:-smollm2}
TABLES=${*:-svip_table1 svip_table3 svip_table4 svip_table2}
# CPU_TREE=1: Table 4 also with an EAGLE-2 tree sized for 2 CPU cores (top_k 4, depth 3, 12 nodes; see
# results/tree_verify_cost_cpu.md), beside the official 60/5/10 tree, in the same sweep folder.
for table in $TABLES; do
  $PY -m svbench --multirun +experiment=$table pair=$PAIR progress=false ${EXTRA:-}
  if [ "$table" = svip_table4 ] && [ -n "${CPU_TREE:-}" ]; then
    $PY -m svbench --multirun +experiment=svip_table4 pair=$PAIR progress=false method.drafter.top_k=4 \
      method.drafter.depth=3 method.drafter.total_token=12 ${EXTRA:-}
  fi
  $PY -m svbench.analysis results/experiments/$table/$PAIR --out results/analysis/$table/$PAIR
done
overview=()
for table in svip_table1 svip_table3 svip_table4; do
  [ -d results/experiments/$table/$PAIR ] && overview+=(results/experiments/$table/$PAIR)
done
$PY -m svbench.analysis "${overview[@]}" --out results/analysis/methods_overview/$PAIR
