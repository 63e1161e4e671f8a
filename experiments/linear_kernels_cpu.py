"""Isolated bf16 linear layers of SmolLM2's shapes: F.linear vs linear=onednn (svbench/linear.py), per row count.

    python experiments/linear_kernels_cpu.py [--rows 1 2 5 12] [--threads 2]

Random weights, warm caches (the same layer called again and again), ms per call, median of 5 x N calls.
Prints a markdown table; results/onednn_linear_cpu.md quotes session 25's run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from svbench.linear import use_linear

SHAPES = {"576 -> 1,536 (MLP up)": (576, 1536), "576 -> 49,152 (LM head)": (576, 49152)}


def ms_per_call(layer: nn.Module, x: torch.Tensor, calls: int) -> float:
    """ms per layer(x) call: 10 warm-up calls, then the median of 5 repeats of `calls` calls."""
    for _ in range(10):
        layer(x)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            layer(x)
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 5, 12])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| layer | " + " | ".join(f"{m} row(s): F.linear -> onednn" for m in args.rows) + " |")
    print("|---|" + "---|" * len(args.rows))
    for name, (d_in, d_out) in SHAPES.items():
        with torch.inference_mode(False):
            plain = nn.Linear(d_in, d_out, bias=False).to(torch.bfloat16)
            fast = nn.Linear(d_in, d_out, bias=False).to(torch.bfloat16)
            fast.load_state_dict(plain.state_dict())
            use_linear(fast, "onednn")
        calls = 30 if d_out > 10_000 else 300
        cells = []
        for m in args.rows:
            x = torch.randn(1, m, d_in).to(torch.bfloat16)  # (B, rows, d_in)
            assert torch.equal(plain(x), fast(x))
            cells.append(f"{ms_per_call(plain, x, calls):.3f} -> {ms_per_call(fast, x, calls):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
