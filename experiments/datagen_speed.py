"""Answer tokens/s of distillation-data generation: transformers' generate (DynamicCache, the generator
before session 5) against svbench.train.data.generate_all (StaticKVCache, finished rows dropped, batches refilled), on the
same prompts, side by side in one run.

    python experiments/datagen_speed.py [--prompts 128] [--max-new-tokens 128] [--batch-sizes 16,32,64,128]
        [--prefill-groups 1,8] [--max-batch-tokens 131072] [--hf-batch-size 32 | 0 to skip transformers]
        [--attention sdpa (the data CLI's default)]

Prompts: the first N of the shuffled training prompts with at most 512 tokens, sorted by length (as the
generator buckets them). Greedy, bf16, the SmolLM2 target. Writes results/datagen_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from svbench.benchmarks import build_prompt
from svbench.config import group_config
from svbench.environment import write_result
from svbench.models import load_pair
from svbench.attention import CHOICES
from svbench.train.data import DATA_ATTENTION, generate_all, shuffled
from svbench.train.prompts import load_train_prompts, train_prompt_dir

REPO = Path(__file__).resolve().parents[1]


@torch.inference_mode()
def hf_generate(model, prompts, max_new_tokens, eos_ids):
    """transformers' generate, left-padded, greedy: the pre-session-5 generator."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(ids, attention_mask=attention, max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids),
                         pad_token_id=0, do_sample=False)
    answers = []
    for row in out[:, width:].tolist():
        cut = next((j + 1 for j, t in enumerate(row) if t in eos_ids), len(row))
        answers.append(row[:cut])
    return answers


def shard_prompts(tokenizer, n: int) -> list[list[int]]:
    """The first n shuffled training prompts (chat template) of at most 512 tokens, sorted by length, as
    the data CLI buckets them; n = 512 is one shard's work."""
    encoded = [build_prompt(tokenizer, "chat", [p.text], []) for p in shuffled(load_train_prompts(train_prompt_dir()), 0)]
    return sorted([e for e in encoded if len(e) <= 512][:n], key=len)


def warm_target(n: int, attention: str = "auto"):
    """The SmolLM2 target pair (bf16, CPU, this attention path), shard_prompts(n), and one warm-up generation:
    the set-up every data-generation timing script shares."""
    pair = load_pair(group_config("pair", "smollm2_layercut"), "bfloat16", "cpu", attention=attention)
    prompts = shard_prompts(pair.tokenizer, n)
    generate_all(pair.target, prompts[:2], 4, 0.0, pair.eos_token_ids)  # warm-up
    return pair, prompts


def timed(fn, prompts, batch):
    start, answers = time.perf_counter(), []
    for b in range(0, len(prompts), batch):
        answers += fn(prompts[b:b + batch])
    seconds = time.perf_counter() - start
    tokens = sum(len(a) for a in answers)
    return {"batch_size": batch, "seconds": round(seconds, 2), "answer_tokens": tokens,
            "tok_s": round(tokens / seconds, 1)}, answers


def int_list(text: str) -> list[int]:
    """'64,128' -> [64, 128]; anything else is one argparse error line."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers separated by commas") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers separated by commas")
    return values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int_list, default="16,32,64,128")
    ap.add_argument("--hf-batch-size", type=int, default=32, help="the old generator's --batch-size default; 0 skips it")
    ap.add_argument("--prefill-groups", type=int_list, default="8", help="comma list: prompts per prefill forward (1 = row by row)")
    ap.add_argument("--max-batch-tokens", type=int, default=131072, help="generate_all's cap on rows x (longest + new)")
    ap.add_argument("--attention", default=DATA_ATTENTION, choices=CHOICES, help="the target's attention path (default: the data CLI's)")
    ap.add_argument("--out", default=str(REPO / "results" / "datagen_speed"))
    args = ap.parse_args()
    pair, prompts = warm_target(args.prompts, args.attention)
    model, eos = pair.target, pair.eos_token_ids
    rows, reference = [], None
    if args.hf_batch_size > 0:
        row, reference = timed(lambda p: hf_generate(model, p, args.max_new_tokens, eos), prompts, args.hf_batch_size)
        rows.append({"generator": "transformers generate (DynamicCache)", **row})
        print(rows[-1], flush=True)
    for batch, group in [(b, g) for b in args.batch_sizes for g in args.prefill_groups]:
        row, answers = timed(lambda p: generate_all(model, p, args.max_new_tokens, 0.0, eos, batch_size=batch,
                                                    max_batch_tokens=args.max_batch_tokens, prefill_group=group),
                             prompts, len(prompts))
        row.update(batch_size=batch, prefill_group=group)
        if reference is not None:
            row["same_answer_as_hf"] = round(sum(a == r for a, r in zip(answers, reference)) / len(answers), 3)
        rows.append({"generator": "svbench generate_all (StaticKVCache, refills)", **row})
        print(rows[-1], flush=True)
    command = "python experiments/datagen_speed.py " + " ".join(
        f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k != "out")
    prompt_tokens = sum(map(len, prompts))
    lines = [f"# Distillation-data generation speed (SmolLM2-135M, bf16, greedy, {torch.get_num_threads()} threads)", "",
             f"`{command}`: {len(prompts)} training prompts ({prompt_tokens} prompt tokens), "
             f"up to {args.max_new_tokens} new tokens each, nothing else running.", "",
             "| generator | batch | prefill group | answer tokens | seconds | answer tok/s | same answer as HF |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['generator']} | {r['batch_size']} | {r.get('prefill_group', '—')} | {r['answer_tokens']} | "
                     f"{r['seconds']} | {r['tok_s']} | {r.get('same_answer_as_hf', '—')} |")
    lines += ["", "Same answer: greedy bf16 answers can differ where padding and batch shape change the rounding "
              "(near-ties); the fp32 test in tests/test_train.py checks the generator against svbench's AR."]
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
