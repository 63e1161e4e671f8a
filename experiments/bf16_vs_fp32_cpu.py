"""F.linear in bf16 vs fp32 on this CPU, per row count, for SmolLM2's layer shapes: ms per call and GFLOP/s.

    python experiments/bf16_vs_fp32_cpu.py [--rows 1 2 4 8 12 64 512] [--threads 2]
        [--out results/bf16_without_native_cpu]

Shows whether bf16 has native matmuls here (svbench.environment.cpu_bf16_native): without them (AVX2 only) a
bf16 linear runs a fallback whose time grows with every row (session 28: a target forward over 12 tree
tokens cost 3.8x one token). Random weights, warm caches (one layer called again and again), median of 5 x N calls; the
49,152-row LM head at most 64 rows. Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from linear_kernels_cpu import ms_per_call as linear_ms_per_call  # noqa: E402  (one timing loop for linear layers)
from svbench.environment import cpu_bf16_native, write_result

SHAPES = {"576 -> 1,536 (MLP up)": (576, 1536), "1,536 -> 576 (MLP down)": (1536, 576),
          "576 -> 49,152 (LM head)": (576, 49152)}


def ms_per_call(w: torch.Tensor, x: torch.Tensor, budget_s: float = 0.3) -> float:
    """linear_kernels_cpu's timing (median of 5 x N calls) of F.linear(x, w), N sized to ~budget_s per repeat."""
    F.linear(x, w)
    start = time.perf_counter()
    F.linear(x, w)
    calls = max(1, int(budget_s / max(time.perf_counter() - start, 1e-6)))
    return linear_ms_per_call(lambda rows: F.linear(rows, w), x, calls)


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 12, 64, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/bf16_without_native_cpu")
    args = ap.parse_args()
    if min(args.rows) < 1 or args.threads < 1:
        sys.exit("--rows and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    rows = []
    for name, (d_in, d_out) in SHAPES.items():
        w32 = torch.randn(d_out, d_in) / d_in ** 0.5
        for m in args.rows:
            if d_out > 10_000 and m > 64:
                continue
            x32 = torch.randn(m, d_in)  # (rows, d_in)
            ms = {dt: ms_per_call(w32.to(dt), x32.to(dt)) for dt in (torch.float32, torch.bfloat16)}
            flop = 2 * m * d_in * d_out
            rows.append({"layer": name, "rows": m, "fp32_ms": ms[torch.float32], "bf16_ms": ms[torch.bfloat16],
                         "fp32_gflops": flop / ms[torch.float32] / 1e6, "bf16_gflops": flop / ms[torch.bfloat16] / 1e6})
    command = "python experiments/bf16_vs_fp32_cpu.py " + " ".join(sys.argv[1:])
    lines = [f"# F.linear, bf16 vs fp32 ({args.threads} threads; native bf16 matmuls: {cpu_bf16_native()}, "
             f"{torch.backends.cpu.get_cpu_capability()})", "", f"`{command}`", "",
             "| layer | rows | fp32 ms | bf16 ms | bf16 / fp32 time | fp32 GFLOP/s | bf16 GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['rows']} | {r['fp32_ms']:.3f} | {r['bf16_ms']:.3f} | "
              f"{r['bf16_ms'] / r['fp32_ms']:.2f} | {r['fp32_gflops']:.1f} | {r['bf16_gflops']:.1f} |" for r in rows]
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
