"""Cost of verifying a draft tree of n tokens vs one token, on this machine (ALGORITHMS.md §4/§5 on CPU).

    python experiments/tree_verify_cost.py [--pair smollm2] [--dtype bfloat16] [--linear plain [onednn]]
        [--out results/tree_verify_cost_cpu]

One target forward over n nodes (a binary tree with the 4-D tree mask; n = 1 is the plain 1-token
forward) after a 256-token cached prefix; median of 7 repetitions; rounds interleaved across n so that
machine noise hits every size alike; with several --linear paths (svbench/linear.py), every path at each
size in turn, on copies of one target. Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

from svbench.config import group_config
from svbench.environment import environment
from svbench.linear import CHOICES as LINEAR_CHOICES, use_linear
from svbench.models import load_pair
from svbench.tree_size import verify_ms

SIZES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="smollm2")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--linear", nargs="+", default=["plain"], choices=LINEAR_CHOICES)
    ap.add_argument("--out", default="results/tree_verify_cost_cpu")
    args = ap.parse_args()
    pair = load_pair(group_config("pair", args.pair), args.dtype, args.device, drafter_cls=None)
    models = {}
    for choice in args.linear:
        models[choice] = copy.deepcopy(pair.target)
        use_linear(models[choice], choice)
    del pair  # the copies are timed, not the loaded target
    times = {(choice, n): [] for choice in args.linear for n in SIZES}
    for _ in range(args.rounds):
        for n in SIZES:
            for choice, model in models.items():
                times[choice, n].append(verify_ms(model, n, prefix=256, reps=7))
    per = {choice: {n: statistics.median(times[choice, n]) for n in SIZES} for choice in args.linear}
    median = per[args.linear[0]]
    linear_arg = f" --linear {' '.join(args.linear)}" if args.linear != ["plain"] else ""
    result = {"pair": args.pair, "dtype": args.dtype, "prefix": 256, "linear": args.linear[0], "ms": median,
              "relative_to_1": {n: median[n] / median[1] for n in SIZES}, "env": environment(args.device),
              "ms_by_linear": per,
              "command": f"python experiments/tree_verify_cost.py --pair {args.pair} --dtype {args.dtype}{linear_arg}"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    lines = [f"# Target forward cost vs tree size — {args.pair}, {args.dtype}, {args.device}", "",
             f"Command: `{result['command']}` (256 cached tokens, median of {args.rounds} x 7 forwards, "
             f"{torch.get_num_threads()} threads)", "",
             "| tree tokens n | " + " | ".join(f"ms ({c}) | x one token ({c})" for c in args.linear) + " |",
             "|---|" + "---|---|" * len(args.linear)]
    lines += [f"| {n} | " + " | ".join(f"{per[c][n]:.1f} | {per[c][n] / per[c][1]:.2f}" for c in args.linear) + " |"
              for n in SIZES]
    lines += ["", f"Environment: {json.dumps({k: result['env'][k] for k in ('cpu', 'gpu', 'torch', 'torch_threads')})}", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
