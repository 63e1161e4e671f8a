#!/usr/bin/env bash
# Vanilla SD on the SmolLM2 pair (trained draft), CPU bf16, Spec-Bench subset: every length policy.
# Each run times its own AR baseline side by side. Usage: bash experiments/spec_bench_policies.sh
set -euo pipefail
COMMON="method=vanilla_sd pair=smollm2 benchmark=spec_bench dtype=bfloat16 benchmark.limit=${LIMIT:-2} max_new_tokens=${TOKENS:-128} progress=false"
python -m svbench $COMMON policy=svip
python -m svbench $COMMON policy=fixed
python -m svbench $COMMON policy=fixed policy.gamma=3 hydra.run.dir=results/runs/smollm2/spec_bench/vanilla_sd-fixed3
python -m svbench $COMMON policy=heuristic
python -m svbench $COMMON policy=confidence
