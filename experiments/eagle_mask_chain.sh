#!/usr/bin/env bash
# Issue 14's masked EAGLE head, end to end and resumable: train an EAGLE head on all the data with EAGLE-3's
# out-of-vocabulary mask (sessions 21-23's run, results/eagle_candidate_s22_smollm2.md), then the ship rule
# (experiments/draft_candidate.sh, FIXED=1) against the shipped head. Re-running it resumes: training from its
# last save (every 50 steps, checkpoints/candidates/NAME-train), the ship rule's runs where they stopped.
# (Before session 28 every NAME trained into checkpoints/candidates/eagle-mask-train.)
# Before session 27 a step took 5-9 s alone on 2 cores (11.4 s on session 25's Xeon, 5.1 s on session 26's Zen 5
# EPYC); session 27's training changes and length_group=16 made it ~2.3 s in a long run on its Xeon (1.5 s with
# TRAIN_ARGS=keep_freed_memory=true, whose heap grew ~14 MB a step; 3.5 s for the old code, results/train_step_speed_s27.md):
# 2,600 steps ~1.7 h, then ~30-40 min of ship rule; run nothing timed beside it.
# Usage (detached, survives the shell): setsid nohup bash experiments/eagle_mask_chain.sh NAME > logs/NAME.log 2>&1 &
#   NAME: the ship rule's results folder (results/experiments/NAME). PY (.venv/bin/python), STEPS (2600),
#   LENGTH_GROUP (16; 1 = session 22's random batches).
#   TRAIN_ARGS: more key=value for the training run (e.g. num_layers=2: a 2-layer head; its own NAME; or
#   "init_from=drafts/smollm2-135m-eagle lr=2e-4 seed=N": go on training the shipped head, sessions 32-33's stages).
# A session's end stops the job but keeps its last save (seen in session 33): re-run the same command next session.
set -euo pipefail
NAME=${1:?usage: bash experiments/eagle_mask_chain.sh NAME}
PY=${PY:-.venv/bin/python}
nice -n 10 $PY -m svbench.train --config-name eagle 'data=[train_data/smollm2,train_data/smollm2_fixed]' \
  out=checkpoints/candidates/$NAME-train export=checkpoints/candidates/$NAME steps=${STEPS:-2600} \
  seq_len=512 ttt_steps=3 save_every=50 mask_outside_vocab=true length_group=${LENGTH_GROUP:-16} ${TRAIN_ARGS:-}
FIXED=1 PY=$PY bash experiments/draft_candidate.sh eagle checkpoints/candidates/$NAME "$NAME"
