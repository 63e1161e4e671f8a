"""svbench_sdpa vs transformers' sdpa for the forwards that verify a tree: several queries, a mask, GQA.

transformers' sdpa repeats each layer's K and V to every query head when a mask is given (svbench.attention);
svbench_sdpa folds the query heads into their KV head's rows and reads the cache in place. Two measurements,
interleaved (A, B, A, B, ...), medians:
  * one attention call with SmolLM2-135M's shapes (9 query heads, 3 KV heads, head_dim 64), K/V a strided view of
    a larger static cache, by query count, cached length and dtype;
  * a whole target verify forward (TargetRunner.forward_tree, then the cache cropped back) of SmolLM2-135M in
    bfloat16 over a random tree, by tree size and cached length (--pair smollm2; --pair tiny for a smoke run).

    python experiments/gqa_fold_cpu.py [--pair smollm2] [--repeats 15] [--out results/gqa_fold_cpu]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svbench.attention import grouped_sdpa, set_attention  # noqa: E402
from svbench.config import group_config  # noqa: E402
from svbench.decoding.target import TargetRunner  # noqa: E402
from svbench.decoding.tree import DraftTree  # noqa: E402
from svbench.environment import write_result  # noqa: E402
from svbench.models import load_pair  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402


class Module(torch.nn.Module):
    num_key_value_groups, is_causal = 3, True


def interleaved_ms(fns: dict, repeats: int) -> dict:
    """Median milliseconds of each callable, run in turn (A, B, A, B, ...) after two warm-up calls each."""
    for fn in fns.values():
        fn(), fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def random_tree(n: int, seed: int, vocab: int) -> DraftTree:
    gen = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, n)]  # topological
    return DraftTree.from_parents(torch.randint(0, vocab, (n,), generator=gen).tolist(), parents)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default="smollm2")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(REPO / "results" / "gqa_fold_cpu"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, lines = [], ["# svbench_sdpa (query heads folded, K/V in place) vs transformers' sdpa (K/V repeated)", "",
                       f"CPU, {torch.get_num_threads()} threads, medians of {args.repeats} interleaved repeats. "
                       "ratio = sdpa / svbench_sdpa (above 1: the fold is faster).", "",
                       "## One attention call (9 query heads, 3 KV heads, head_dim 64, boolean mask)", "",
                       "| dtype | queries | cached | sdpa ms | svbench_sdpa ms | ratio |", "|---|---|---|---|---|---|"]
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        for L in (512, 2048, 4096):
            for Tq in (12, 60):
                buffer = torch.randn(2, 1, 3, L + 512, 64, generator=gen).to(dtype)  # a static cache, spare room
                k, v = buffer[0, :, :, :L], buffer[1, :, :, :L]  # (1, 3, L, 64) strided views
                q = torch.randn(1, 9, Tq, 64, generator=gen).to(dtype)
                mask = torch.ones(1, 1, Tq, L, dtype=torch.bool)
                mask[..., L - Tq:] = torch.rand(Tq, Tq, generator=gen) > 0.5
                ms = interleaved_ms({
                    "sdpa": lambda: sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.125),
                    "svbench_sdpa": lambda: grouped_sdpa(Module(), q, k, v, mask, scaling=0.125)}, args.repeats)
                rows.append({"kind": "attention", "dtype": str(dtype).removeprefix("torch."), "queries": Tq,
                             "cached": L, **ms})
                lines.append(f"| {rows[-1]['dtype']} | {Tq} | {L} | {ms['sdpa']:.3f} | {ms['svbench_sdpa']:.3f} | "
                             f"{ms['sdpa'] / ms['svbench_sdpa']:.2f} |")
    pair = load_pair(group_config("pair", args.pair), "bfloat16", "cpu", drafter_cls=None)
    target = pair.target
    lines += ["", f"## A whole verify forward ({args.pair}, bfloat16, a random tree, the cache cropped back)", "",
              "| tree nodes | cached | sdpa ms | svbench_sdpa ms | ratio |", "|---|---|---|---|---|"]
    with torch.inference_mode():
        for L in (512, 2048):
            runner = TargetRunner(target, capacity=L + 128)
            runner.prefill(torch.randint(0, target.config.vocab_size, (L,), generator=gen).tolist())
            for n in (12, 60):
                tree = random_tree(n, n, target.config.vocab_size)

                def verify(choice):
                    set_attention(target, choice)
                    runner.forward_tree(tree)
                    runner.cache.crop(-n)

                ms = interleaved_ms({c: (lambda c=c: verify(c)) for c in ("sdpa", "svbench_sdpa")}, args.repeats)
                rows.append({"kind": "verify", "pair": args.pair, "tree_nodes": n, "cached": L, **ms})
                lines.append(f"| {n} | {L} | {ms['sdpa']:.1f} | {ms['svbench_sdpa']:.1f} | "
                             f"{ms['sdpa'] / ms['svbench_sdpa']:.2f} |")
    print("\n".join(lines))
    write_result(args.out, lines, f"python experiments/gqa_fold_cpu.py --pair {args.pair} --repeats {args.repeats}",
                 rows)


if __name__ == "__main__":
    main()
