"""How far a low-precision forward moves the target's top-1 / top-2 logit gap: the bound below which a greedy
divergence from AR is a near-tie (svbench.runner.TIE_BOUND).

For Spec-Bench first turns, the AR answer (greedy, run dtype) is scored three ways at every position:
  ref    float32 compute of the same (dtype-rounded) weights, one prefill over prompt + answer;
  step   the run dtype, one token at a time through the KV cache (how AR scores it);
  chunk  the run dtype, the answer fed in chunks of --chunk tokens (how SD's verify forward scores it).
Error of a mode at a position = |(l_a - l_b)_mode - (l_a - l_b)_ref| for the reference's top-2 tokens a, b.
A divergence at a position whose float32 gap is below the largest error seen can be numerics.

    python experiments/dtype_tie_bound.py --dtype bfloat16 --questions 12 --tokens 96
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from svbench.benchmarks import build_prompt, load_benchmark
from svbench.config import group_config
from svbench.decoding.loop import generate
from svbench.decoding.target import TargetRunner
from svbench.models import load_pair


@torch.inference_mode()
def scored(model, prompt: list[int], answer: list[int], chunk: int) -> torch.Tensor:
    """Next-token logits (len(answer), V) at the positions that predict answer[0..], fed `chunk` at a time."""
    runner = TargetRunner(model)
    rows = [runner.prefill(prompt)[0]]
    fed = list(prompt)
    for start in range(0, len(answer) - 1, chunk):
        piece = answer[start: start + chunk]
        hidden, _ = runner._run(torch.tensor([piece]))  # (1, t, d)
        runner.cached_len += len(piece)
        rows.extend(model.lm_head(hidden[0]))
        fed += piece
    return torch.stack(rows[: len(answer)]).float()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default="smollm2")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--questions", type=int, default=12, help="Spec-Bench first turns (2 per category)")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=6, help="verify-like chunk length")
    ap.add_argument("--out", default="results/dtype_tie_bound.json")
    args = ap.parse_args(argv)
    pair = load_pair(group_config("pair", args.pair), args.dtype, "cpu")
    reference = copy.deepcopy(pair.target).float()
    questions = load_benchmark({**group_config("benchmark", "spec_bench"), "limit": max(1, args.questions // 6),
                                "turns": "first"})[: args.questions]
    errors = {"step": [], "chunk": []}
    gaps = []
    for q in questions:
        prompt = build_prompt(pair.tokenizer, "chat", [q.turns[0]], [])
        answer = generate(pair.target, prompt, args.tokens, eos_ids=()).ids
        ref = scored(reference, prompt, answer, chunk=len(answer))  # one forward over the answer: float32
        top2 = ref.topk(2, dim=-1).indices  # (T, 2)
        ref_gap = (ref.gather(1, top2[:, :1]) - ref.gather(1, top2[:, 1:]))[:, 0]
        gaps.extend(ref_gap.tolist())
        for mode, chunk in (("step", 1), ("chunk", args.chunk)):
            low = scored(pair.target, prompt, answer, chunk)
            gap = (low.gather(1, top2[:, :1]) - low.gather(1, top2[:, 1:]))[:, 0]
            errors[mode].extend((gap - ref_gap).abs().tolist())
    result = {"pair": args.pair, "dtype": args.dtype, "questions": len(questions), "tokens": args.tokens,
              "positions": len(gaps), "chunk": args.chunk,
              **{f"{m}_error_{k}": float(f(np.array(e))) for m, e in errors.items()
                 for k, f in (("median", np.median), ("p99", lambda a: np.quantile(a, 0.99)), ("max", np.max))},
              "ref_gap_below_0.5": float(np.mean(np.array(gaps) < 0.5))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
