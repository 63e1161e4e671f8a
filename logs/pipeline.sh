#!/bin/bash
# background pipeline (session 5): wait for the data generator, then train candidate drafts (resumable)
cd /work/main
while kill -0 27637 2>/dev/null; do sleep 60; done
nice -n 10 make drafts EAGLE_DIR=checkpoints/candidates/eagle DRAFT_DIR=checkpoints/candidates/draft-lm GLIDE_DIR=checkpoints/candidates/glide EAGLE3_DIR=checkpoints/candidates/eagle3
