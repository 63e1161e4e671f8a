"""Long-form generation within memory: peak RSS and per-token time at 128 .. ~8K new tokens (issue: sweeps
that survive, long context). SmolLM2-135M has 8192 positions, so the longest request is 8192 minus the
prompt and one draft round; a longer one is refused before generating (svbench.runner.check_length).

    python experiments/long_context.py [--lengths 128 1024 4096 7900] [--methods ar vanilla_sd vanilla_sd+fallback]
        [--out results/long_context_cpu]

Methods: ar, vanilla_sd (trained draft LM + svip), vanilla_sd+fallback (the same with ar_fallback on: target-only
rounds while drafting does not pay).

Each (length, method) runs in its own process so that its peak RSS (ru_maxrss) is its own. MT-Bench
long-form protocol: first MT-Bench question, T = 1, EOS ignored (ALGORITHMS.md §8), bf16, 2 threads.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's svbench, also when another one is installed

from svbench.environment import write_result  # noqa: E402


def worker(method: str, length: int, dtype: str) -> dict:
    import torch

    from svbench.benchmarks import build_prompt, load_benchmark
    from svbench.config import group_config
    from svbench.decoding.drafters.draft_model import DraftModelDrafter
    from svbench.decoding.loop import generate
    from svbench.decoding.policies import ArFallback, SVIPPolicy
    from svbench.decoding.verify import Sampling
    from svbench.models import load_pair

    pair = load_pair(group_config("pair", "smollm2"), dtype, "cpu", drafter_cls=None if method == "ar" else DraftModelDrafter)
    question = load_benchmark({**group_config("benchmark", "mt_bench_long"), "limit": 1})[0]
    prompt = build_prompt(pair.tokenizer, "chat", [question.turns[0]], [])
    drafter = None if method == "ar" else DraftModelDrafter.from_pair(pair)
    policy = None if method == "ar" else SVIPPolicy()
    if method == "vanilla_sd+fallback":
        policy.ar_fallback = ArFallback()
    start = time.perf_counter()
    out = generate(pair.target, prompt, length, drafter, policy, Sampling(temperature=1.0), pair.eos_token_ids,
                   ignore_eos=True, generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - start
    return {"method": method, "new_tokens": len(out.ids), "prompt_len": len(prompt), "wall_s": wall,
            "ms_per_token": 1000 * wall / len(out.ids), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rounds": len(out.rounds), "drafting_rounds": sum(r.steps > 0 for r in out.rounds),
            "accepted": sum(r.accepted for r in out.rounds)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096, 7900])
    ap.add_argument("--methods", nargs="+", default=["ar", "vanilla_sd"],
                    choices=["ar", "vanilla_sd", "vanilla_sd+fallback"])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default="results/long_context_cpu")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.dtype)))
        return
    rows = []
    for length in args.lengths:
        for method in args.methods:
            done = subprocess.run([sys.executable, __file__, "--worker", method, str(length), "--dtype", args.dtype],
                                  cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr)
            rows.append({"max_new_tokens": length, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(rows[-1], file=sys.stderr)
    lines = ["# Long-form generation on CPU — SmolLM2-135M (+ trained draft LM, svip), MT-Bench q1, T=1, EOS ignored", "",
             f"Command: `python experiments/long_context.py --lengths {' '.join(map(str, args.lengths))} --methods "
             f"{' '.join(args.methods)}` ({args.dtype}, one process per row: peak RSS is that run's own)", "",
             "| max_new_tokens | method | prompt | ms / token | vs AR | wall s | target rounds | drafting rounds | "
             "accepted | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    ar = {r["max_new_tokens"]: r["ms_per_token"] for r in rows if r["method"] == "ar"}
    for r in rows:
        vs_ar = f"{ar[r['max_new_tokens']] / r['ms_per_token']:.2f}x" if r["max_new_tokens"] in ar else ""
        lines.append(f"| {r['max_new_tokens']} | {r['method']} | {r['prompt_len']} | {r['ms_per_token']:.1f} | {vs_ar} | "
                     f"{r['wall_s']:.1f} | {r['rounds']} | {r['drafting_rounds']} | {r['accepted']} | {r['peak_rss_mb']:.0f} |")
    write_result(args.out, lines, f"python experiments/long_context.py --lengths {' '.join(map(str, args.lengths))} "
                 f"--methods {' '.join(args.methods)} --dtype {args.dtype}", rows)


if __name__ == "__main__":
    main()
