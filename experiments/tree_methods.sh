#!/usr/bin/env bash
# GliDe, GliDe+CaPE and EAGLE-2 x {fixed, svip} on the SmolLM2 pair (svbench's trained drafts), CPU bf16,
# Spec-Bench subset. Each run times its own AR baseline side by side, question by question.
# Usage: SVBENCH_DATA=../shared/data bash experiments/tree_methods.sh   (LIMIT=2 TOKENS=128 by default)
set -euo pipefail
COMMON="pair=smollm2 benchmark=spec_bench dtype=bfloat16 benchmark.limit=${LIMIT:-2} max_new_tokens=${TOKENS:-128} progress=false"
OUT=results/runs/smollm2/spec_bench
python -m svbench $COMMON method=glide policy=fixed policy.gamma=4 hydra.run.dir=$OUT/glide-fixed4
python -m svbench $COMMON method=glide policy=svip
python -m svbench $COMMON method=glide_cape policy=fixed policy.gamma=4 hydra.run.dir=$OUT/glide_cape-fixed4
python -m svbench $COMMON method=glide_cape policy=svip
python -m svbench $COMMON method=eagle2 policy=fixed policy.gamma=6 hydra.run.dir=$OUT/eagle2-fixed6
python -m svbench $COMMON method=eagle2 policy=svip
python -m svbench $COMMON method=eagle2 policy=svip method.drafter.total_token=auto hydra.run.dir=$OUT/eagle2-svip-auto
