"""Where a target forward's time goes, by aten op (torch.profiler), for a tree of n tokens after a cached prefix.

    python experiments/forward_profile.py [--pair smollm2] [--dtype bfloat16] [--tokens 1 2 5] [--linear plain]

One target forward over an n-node binary tree (n = 1: a one-token step) after 256 cached tokens, 5 forwards
profiled per n after 12 timed ones; prints the median ms and the top ops by self CPU time. Session 25's run
(results/tree_shapes_s25_smollm2.md, section 3) found aten::mm at 29 ms per forward for 1 token and 48 ms for 5.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from svbench.config import group_config
from svbench.decoding.target import TargetRunner
from svbench.linear import CHOICES as LINEAR_CHOICES
from svbench.models import load_pair
from svbench.tree_size import binary_tree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="smollm2")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 5])
    ap.add_argument("--linear", default="plain", choices=LINEAR_CHOICES)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    target = load_pair(group_config("pair", args.pair), args.dtype, "cpu", linear=args.linear).target
    with torch.inference_mode():  # after loading: weights made under inference_mode have no version to reorder
        profile_forwards(target, args.tokens)


def profile_forwards(target, tokens: list[int]) -> None:
    runner = TargetRunner(target)
    runner.prefill(torch.randint(0, target.config.vocab_size, (256,)).tolist())
    for n in tokens:
        tree = binary_tree(target.config.vocab_size, n)  # the tree tree_verify_cost.py times
        times = []
        for _ in range(12):
            start = time.perf_counter()
            runner.forward_tree(tree)
            times.append(time.perf_counter() - start)
            runner.cache.crop(-n)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                runner.forward_tree(tree)
                runner.cache.crop(-n)
        print(f"\n## {n} tree token(s): {statistics.median(times[2:]) * 1e3:.1f} ms per forward (median of 10); "
              f"profile over 5 forwards:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
