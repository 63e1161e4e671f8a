"""Seconds for one forward + backward of the soft cross-entropy at a training step's size: autograd's chain on
gathered rows (the code before session 27) against svbench.train.recipes.soft_cross_entropy (one autograd
function, rows selected by a mask), on the same bf16 logits, alternating, medians.

    python experiments/soft_ce_speed.py [--rows 2000] [--vocab 16384] [--repeats 7] [--out results/soft_ce_speed]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from svbench.environment import write_result
from svbench.train.recipes import soft_cross_entropy


def chain(draft_logits, target_probs, keep):
    """Before session 27: gather the kept rows, then log_softmax, product and sum under autograd."""
    d, p = draft_logits[keep], target_probs[keep]
    return -(p * F.log_softmax(d.float(), -1)).sum(-1).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="results/soft_ce_speed")
    args = ap.parse_args()
    if min(args.rows, args.vocab, args.repeats) < 1:
        raise SystemExit("--rows, --vocab and --repeats: integers >= 1")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, generator=g).bfloat16()
    probs = F.softmax(torch.randn(args.rows, args.vocab, generator=g), -1)
    keep = torch.rand(args.rows, generator=g) > 0.1
    seconds = {"chain": [], "soft_cross_entropy": []}
    for _ in range(args.repeats):
        for name, fn in (("chain", chain), ("soft_cross_entropy", soft_cross_entropy)):
            d = logits.clone().requires_grad_()
            start = time.perf_counter()
            fn(d, probs, keep).backward()
            seconds[name].append(time.perf_counter() - start)
    rows = [{"version": k, "median_s": statistics.median(v), "seconds": v} for k, v in seconds.items()]
    command = "python experiments/soft_ce_speed.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())
    lines = [f"# Soft cross-entropy, forward + backward ({args.rows} x {args.vocab} bf16 logits, 10% rows dropped)", "",
             f"`{command}`: {args.repeats} alternating repeats, medians.", "",
             "| version | median s |", "|---|---|"] + [f"| {r['version']} | {r['median_s']:.3f} |" for r in rows]
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
