"""Which attention path is fast on this CPU: scaled_dot_product_attention for the shapes a decoding round
uses (SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64), by dtype, query length, cached length and how
transformers calls it (no mask for one query; a boolean or additive mask for several), medians of repeats.

    python experiments/attention_paths_cpu.py [--out results/attention_paths_cpu]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's svbench, also when another one is installed

from svbench.environment import write_result  # noqa: E402


def median_ms(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results" / "attention_paths_cpu"))
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=64)
    args = ap.parse_args()
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for kv_len in (128, 1024, 4096):
            for q_len in (1, 2, 6):
                q = torch.randn(1, args.heads, q_len, args.head_dim, dtype=dtype)
                k = torch.randn(1, args.kv_heads, kv_len, args.head_dim, dtype=dtype)
                v = torch.randn_like(k)
                rep = args.heads // args.kv_heads
                k_rep, v_rep = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)  # what transformers' sdpa does
                allowed = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)[None, None]
                additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
                variants = {
                    "no mask": lambda: F.scaled_dot_product_attention(q, k_rep, v_rep),
                    "bool mask": lambda: F.scaled_dot_product_attention(q, k_rep, v_rep, attn_mask=allowed),
                    "additive mask": lambda: F.scaled_dot_product_attention(q, k_rep, v_rep, attn_mask=additive),
                    "gqa, no mask": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                    "repeat + no mask": lambda: F.scaled_dot_product_attention(
                        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)),
                    "matmul (math)": lambda: torch.softmax((q @ k_rep.transpose(-1, -2)) * args.head_dim ** -0.5
                                                           + additive, -1) @ v_rep,
                }
                for name, fn in variants.items():
                    with torch.inference_mode():
                        ms = median_ms(fn)
                    rows.append({"dtype": str(dtype).removeprefix("torch."), "kv_len": kv_len, "q_len": q_len,
                                 "variant": name, "ms": ms})
                    print(json.dumps(rows[-1]), flush=True)
    lines = [f"# Attention on this CPU ({torch.get_num_threads()} threads, torch {torch.__version__})", "",
             "One layer's attention, ms (median of 30), 9 query heads / 3 KV heads / head_dim 64. Command: "
             "`python experiments/attention_paths_cpu.py`.", "",
             "| dtype | cached | queries | " + " | ".join(dict.fromkeys(r["variant"] for r in rows)) + " |",
             "|---|---|---|" + "---|" * len(dict.fromkeys(r["variant"] for r in rows))]
    keys = sorted({(r["dtype"], r["kv_len"], r["q_len"]) for r in rows}, key=lambda t: (t[0], t[1], t[2]))
    for key in keys:
        cells = [f"{r['ms']:.3f}" for r in rows if (r["dtype"], r["kv_len"], r["q_len"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    write_result(args.out, lines, "python experiments/attention_paths_cpu.py", rows)


if __name__ == "__main__":
    main()
