"""svbench AR vs transformers `generate`, same prompt, fixed length, alternating runs (median ratio).

    python experiments/ar_vs_generate.py [--pair smollm2] [--dtype bfloat16] [--tokens 64] [--reps 8]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svbench.config import group_config  # noqa: E402
from svbench.decoding.loop import generate  # noqa: E402
from svbench.models import load_pair  # noqa: E402

PROMPT = "Explain the water cycle in detail for a school student please."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default="smollm2")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=8)
    args = ap.parse_args()
    pair = load_pair(group_config("pair", args.pair), args.dtype, drafter_cls=None)
    model, prompt = pair.target, pair.tokenizer(PROMPT, add_special_tokens=False).input_ids

    def hf() -> float:
        ids = torch.tensor([prompt])
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                           min_new_tokens=args.tokens, do_sample=False, pad_token_id=pair.eos_token_ids[0])
        return time.perf_counter() - start

    def ours() -> float:
        return generate(model, prompt, args.tokens).wall_time  # no EOS ids: exactly args.tokens tokens

    hf(), ours()  # warm-up
    times = [(ours(), hf()) for _ in range(args.reps)]
    print(f"svbench AR median {statistics.median(a for a, _ in times):.3f} s, transformers generate median "
          f"{statistics.median(b for _, b in times):.3f} s for {args.tokens} tokens; median per-pair ratio "
          f"(generate time / svbench time) {statistics.median(b / a for a, b in times):.3f}")


if __name__ == "__main__":
    main()
