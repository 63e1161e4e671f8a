#!/usr/bin/env bash
# GliDe, GliDe+CaPE and EAGLE-2 x {fixed, svip} on the SmolLM2 pair (svbench's trained drafts), CPU bf16,
# Spec-Bench subset, plus vanilla SD + svip for reference. Each run times its own AR baseline side by
# side, question by question. Usage: bash experiments/tree_methods.sh
# (LIMIT=1: the first question of each category = 7 question-turns; TOKENS=128)
set -euo pipefail
COMMON="pair=smollm2 benchmark=spec_bench dtype=bfloat16 benchmark.limit=${LIMIT:-1} max_new_tokens=${TOKENS:-128} progress=false"
OUT=results/runs/smollm2/spec_bench_l${LIMIT:-1}
CPU_BINS="method.drafter.cape_bins=[4,4,4,3,3,3,2,2,1,1,1,1]"
python -m svbench $COMMON method=vanilla_sd policy=svip hydra.run.dir=$OUT/vanilla_sd-svip
python -m svbench $COMMON method=glide policy=fixed policy.gamma=4 hydra.run.dir=$OUT/glide-fixed4
python -m svbench $COMMON method=glide policy=svip hydra.run.dir=$OUT/glide-svip
python -m svbench $COMMON method=glide_cape policy=fixed policy.gamma=4 hydra.run.dir=$OUT/glide_cape-fixed4
python -m svbench $COMMON method=glide_cape policy=svip hydra.run.dir=$OUT/glide_cape-svip
python -m svbench $COMMON method=glide_cape policy=svip $CPU_BINS hydra.run.dir=$OUT/glide_cape-svip-cpubins
python -m svbench $COMMON method=eagle2 policy=fixed policy.gamma=6 hydra.run.dir=$OUT/eagle2-fixed6
python -m svbench $COMMON method=eagle2 policy=svip hydra.run.dir=$OUT/eagle2-svip
python -m svbench $COMMON method=eagle2 policy=svip method.drafter.top_k=4 method.drafter.depth=3 method.drafter.total_token=12 hydra.run.dir=$OUT/eagle2-svip-k4d3n12
python -m svbench $COMMON method=eagle2 policy=svip method.drafter.total_token=auto hydra.run.dir=$OUT/eagle2-svip-auto
