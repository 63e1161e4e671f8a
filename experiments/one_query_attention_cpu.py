"""svbench's one-query attention (svbench/attention.py, the bf16/fp16 CPU decode path) on a KV cache that
is a strided view of a pre-allocated buffer, as StaticKVLayer returns it: scores as q @ k^T (before
2026-11-29) against (k @ q^T)^T (now), SmolLM2-135M's shapes (9 query heads, 3 KV heads, head_dim 64),
per layer, medians of repeats; both in the same run.

    python experiments/one_query_attention_cpu.py [--out results/one_query_attention_cpu]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from attention_paths_cpu import median_ms  # noqa: E402  (one timing helper for the attention benchmarks)


def attend(q, key, value, transposed_scores: bool):
    """The one-query path's math: q (B, kv, rep, d); key/value (B, kv, L, d) views. Returns (B, kv, rep, d)."""
    if transposed_scores:
        scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2)  # (B, kv, rep, L), K read in place
    else:
        scores = torch.matmul(q, key.transpose(-1, -2))  # (B, kv, rep, L)
    probs = torch.softmax(scores.float() * q.shape[-1] ** -0.5, dim=-1).to(value.dtype)
    return torch.matmul(probs, value)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "results" / "one_query_attention_cpu"))
    args = ap.parse_args()
    rows = []
    for batch in (1, 64):
        for cached in (128, 1024, 4096):
            if batch == 64 and cached == 4096:
                continue
            buffer = torch.randn(2, batch, 3, cached + 256, 64, dtype=torch.bfloat16)  # capacity > length
            key, value = buffer[0, :, :, :cached], buffer[1, :, :, :cached]  # strided views, as the cache's
            q = torch.randn(batch, 1, 9 * 64, dtype=torch.bfloat16).view(batch, 1, 9, 64).transpose(1, 2)
            q = q.reshape(batch, 3, 3, 64)
            old = median_ms(lambda: attend(q, key, value, False), repeats=50)
            new = median_ms(lambda: attend(q, key, value, True), repeats=50)
            torch.testing.assert_close(attend(q, key, value, False), attend(q, key, value, True), atol=2e-2, rtol=2e-2)
            rows.append({"batch": batch, "cached": cached, "q_kT_ms": round(old, 4), "k_qT_ms": round(new, 4),
                         "speedup": round(old / new, 2)})
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
    lines = ["# One-query attention on a strided KV-cache view (bf16, CPU, per layer)", "",
             f"`python experiments/one_query_attention_cpu.py` ({torch.get_num_threads()} threads, median of 50, "
             "nothing else running). SmolLM2-135M shapes: 9 query heads, 3 KV heads, head_dim 64.", "",
             "| rows | cached tokens | q @ k^T, ms | (k @ q^T)^T, ms | speedup |", "|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['cached']} | {r['q_kT_ms']} | {r['k_qT_ms']} | {r['speedup']}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
