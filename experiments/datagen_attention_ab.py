"""Data generation under two attention paths, paired: each chunk of prompts is answered under both paths back to
back (order alternating by chunk, ABBA), so a machine whose speed drifts between runs (session 21: the same
profile ran at 229-373 answer tok/s within an hour) still gives a per-chunk ratio.

    python experiments/datagen_attention_ab.py [--prompts 512] [--chunk 128] [--max-new-tokens 256]
        [--paths sdpa,svbench_cpu] [--out results/datagen_attention_ab]

Prompts: datagen_speed.shard_prompts (the data CLI's first shard). Greedy, bf16, the SmolLM2 target, the
data CLI's batch defaults. Writes <out>.json (every run) and prints one line per run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import svbench.train.data as data
from datagen_speed import warm_target  # experiments/ is on sys.path when run as a script
from svbench.attention import CHOICES, set_attention

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=128, help="prompts per paired chunk (one batch at the defaults)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--paths", default="sdpa,svbench_cpu", help="two attention paths, A,B")
    ap.add_argument("--out", default=str(REPO / "results" / "datagen_attention_ab"))
    args = ap.parse_args()
    paths = args.paths.split(",")
    if len(paths) != 2 or any(p not in CHOICES for p in paths):
        ap.error(f"--paths: two of {CHOICES}, comma-separated")
    if min(args.prompts, args.chunk, args.max_new_tokens) < 1:
        ap.error("--prompts, --chunk and --max-new-tokens: integers >= 1")
    pair, prompts = warm_target(args.prompts)  # prompts sorted by length: each chunk is one length band
    model, eos = pair.target, pair.eos_token_ids
    runs = []
    for k, first in enumerate(range(0, len(prompts), args.chunk)):
        chunk = prompts[first:first + args.chunk]
        for path in (paths if k % 2 == 0 else paths[::-1]):  # ABBA over chunks
            set_attention(model, path)  # auto resolves as in a run
            start = time.perf_counter()
            answers = data.generate_all(model, chunk, args.max_new_tokens, 0.0, eos)
            seconds = time.perf_counter() - start
            tokens = sum(map(len, answers))
            runs.append({"chunk": k, "prompts": len(chunk), "attention": path, "seconds": seconds,
                         "answer_tokens": tokens, "tok_s": tokens / seconds})
            print(json.dumps(runs[-1]), flush=True)
    ratios = [next(r["tok_s"] for r in runs if r["chunk"] == k and r["attention"] == paths[0])
              / next(r["tok_s"] for r in runs if r["chunk"] == k and r["attention"] == paths[1])
              for k in sorted({r["chunk"] for r in runs})]
    summary = {"paths": paths, "threads": torch.get_num_threads(), "ratios_a_over_b": ratios,
               "median_ratio": statistics.median(ratios),
               **{f"{p}_tok_s": sum(r["answer_tokens"] for r in runs if r["attention"] == p)
                  / sum(r["seconds"] for r in runs if r["attention"] == p) for p in paths}}
    print(json.dumps(summary))
    Path(args.out).with_suffix(".json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))

if __name__ == "__main__":
    main()
