"""Where distillation-data generation spends its time: one generate_all run (the data CLI's defaults) with
every target forward, KV-cache allocation, batch compaction and greedy pick timed.

    python experiments/datagen_profile.py [--prompts 512] [--max-new-tokens 256] [--batch-size 128] [--max-batch-tokens 131072]
        [--attention sdpa]

Prompts: experiments/datagen_speed.py's shard_prompts (N = 512 is one shard's work). Greedy, bf16, the
SmolLM2 target. Prints one JSON line and a table of decode steps by batch rows; writes nothing. The timers
synchronise nothing (CPU only).
"""
from __future__ import annotations

import argparse
import collections
import json
import time

import torch

import svbench.decoding.kv_cache as kv_cache
import svbench.train.data as data
from datagen_speed import warm_target  # experiments/ is on sys.path when run as a script
from svbench.attention import CHOICES


TIMED = ("alloc", "compact", "pick", "lm_head")  # what main() times besides the target's forwards


def timed(owner, name: str, key: str, seconds: collections.Counter, calls: collections.Counter) -> None:
    """Replace owner.name by a wrapper adding its wall time to seconds[key]."""
    fn = getattr(owner, name)

    def inner(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[key] += time.perf_counter() - start
        calls[key] += 1
        return out
    setattr(owner, name, inner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=128, help="rows per decode batch (the data CLI's --batch-size)")
    ap.add_argument("--max-batch-tokens", type=int, default=data.MAX_BATCH_TOKENS,
                    help="cap on rows x (longest + new tokens) per batch (the data CLI's --max-batch-tokens)")
    ap.add_argument("--attention", default=data.DATA_ATTENTION, choices=CHOICES,
                    help="the target's attention path (the data CLI's --attention)")
    args = ap.parse_args()
    if min(args.prompts, args.max_new_tokens, args.batch_size, args.max_batch_tokens) < 1:
        ap.error("--prompts, --max-new-tokens, --batch-size and --max-batch-tokens: integers >= 1")
    pair, prompts = warm_target(args.prompts, args.attention)
    model, eos = pair.target, pair.eos_token_ids
    forwards = []  # (rows, new tokens, seconds) per target forward
    body = model.model.forward

    def forward(*a, **k):
        start = time.perf_counter()
        out = body(*a, **k)
        forwards.append((*k["input_ids"].shape, time.perf_counter() - start))  # input_ids (rows, new tokens)
        return out
    model.model.forward = forward
    seconds, calls = collections.Counter(), collections.Counter()
    # allocation of a cache's one zeroed K/V buffer: for a batch before its first forward, for a prefill
    # group inside it (so alloc_s overlaps prefill_s)
    timed(kv_cache.StaticKVCache, "share", "alloc", seconds, calls)
    timed(kv_cache.StaticKVCache, "select_batch", "compact", seconds, calls)  # dropping finished rows: a copy
    timed(data, "pick", "pick", seconds, calls)
    timed(model.lm_head, "forward", "lm_head", seconds, calls)
    start = time.perf_counter()
    answers = data.generate_all(model, prompts, args.max_new_tokens, 0.0, eos, batch_size=args.batch_size,
                                max_batch_tokens=args.max_batch_tokens)
    total = time.perf_counter() - start
    decode = [f for f in forwards if f[1] == 1]
    prefill = [f for f in forwards if f[1] > 1]
    tokens = sum(map(len, answers))
    summary = {"prompts": len(prompts), "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens,
               "attention": args.attention,
               "threads": torch.get_num_threads(), "total_s": total, "answer_tokens": tokens,
               "answer_tok_s": tokens / total, "prefill_s": sum(f[2] for f in prefill),
               "prefill_tokens": sum(f[0] * f[1] for f in prefill), "decode_s": sum(f[2] for f in decode),
               "decode_steps": len(decode), "decode_row_steps": sum(f[0] for f in decode),
               **{f"{k}_s": seconds[k] for k in TIMED}, **{f"{k}_calls": calls[k] for k in TIMED}}
    # the rest: placing K/V into batches, refills, the Python loop (allocations of batch caches included)
    summary["other_s"] = total - sum(summary[k] for k in ("prefill_s", "decode_s", "compact_s", "pick_s", "lm_head_s"))
    print(json.dumps(summary))
    by_rows = collections.defaultdict(lambda: [0, 0.0, 0])  # rows // 16 * 16 -> steps, seconds, row-steps
    for rows, _, s in decode:
        bucket = by_rows[rows // 16 * 16]
        bucket[0], bucket[1], bucket[2] = bucket[0] + 1, bucket[1] + s, bucket[2] + rows
    print("| batch rows | decode steps | seconds | ms per row |\n|---|---|---|---|")
    for rows, (steps, s, row_steps) in sorted(by_rows.items()):
        print(f"| {rows}-{rows + 15} | {steps} | {s:.1f} | {1e3 * s / row_steps:.2f} |")


if __name__ == "__main__":
    main()
