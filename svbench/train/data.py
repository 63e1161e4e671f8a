"""Target-generated distillation data: the frozen target answers the training prompts.

    python -m svbench.train.data --out train_data/smollm2 --num-prompts 4000 [--temperatures 0,1.0]

Prompts are shuffled once with a fixed seed; shard k holds prompts [k*S, (k+1)*S) of that order and is
written atomically (tmp + rename), so an interrupted run resumes at the first missing shard. A prompt
is held out (never trained on) when a hash of its text falls below --heldout-permille: the split is
by prompt and does not depend on how many prompts are generated. Shard k is generated at temperature
temperatures[k % len(temperatures)] (0 = greedy). Rows: {i, source, split, temperature, prompt_len,
ids} where ids = prompt + answer (the answer ends at EOS when one was generated).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from svbench.benchmarks import build_prompt
from svbench.config import group_config
from svbench.errors import SvbenchError, report_user_errors
from svbench.models import load_pair
from svbench.train.prompts import TrainPrompt, load_train_prompts, train_prompt_dir



def is_heldout(text: str, permille: int) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 1000 < permille


def shuffled(prompts: list[TrainPrompt], seed: int) -> list[TrainPrompt]:
    order = list(prompts)
    random.Random(seed).shuffle(order)
    return order


def read_shards(folder: Path, split: str | None = None) -> list[dict]:
    rows = []
    for shard in sorted(Path(folder).glob("shard-*.jsonl")):
        with open(shard) as fh:
            for line_no, line in enumerate(fh, start=1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SvbenchError(f"{shard}, line {line_no}: not valid JSON ({exc.msg})") from None
                if split is None or row["split"] == split:
                    rows.append(row)
    if not rows:
        raise SvbenchError(f"no generated data under {folder} (split={split}); run python -m svbench.train.data")
    return rows


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                   eos_ids) -> list[list[int]]:
    """Left-padded batched generation; returns each answer cut after its first EOS."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (B, width)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False}
    out = model.generate(input_ids, attention_mask=attention, max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids),
                         pad_token_id=pad, **sampling)
    answers = []
    for row in out[:, width:].tolist():
        cut = next((j + 1 for j, t in enumerate(row) if t in eos_ids), len(row))
        answers.append(row[:cut])
    return answers


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Generate distillation data with the target model.")
    ap.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    ap.add_argument("--pair", default="smollm2_layercut", help="conf/pair/<name>.yaml; only its target is used")
    ap.add_argument("--prompts-dir", default=None, help="default: $SVBENCH_DATA/train_prompts, else svbench/data/train_prompts")
    ap.add_argument("--num-prompts", type=int, default=None, help="first N prompts of the shuffled order (default all)")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--max-prompt-tokens", type=int, default=768, help="longer prompts are skipped")
    ap.add_argument("--temperatures", default="0,1.0", help="comma list, cycled over shards; 0 = greedy")
    ap.add_argument("--heldout-permille", type=int, default=20)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    report_user_errors(run, ap.parse_args(argv))


def run(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        temperatures = [float(t) for t in str(args.temperatures).split(",")]
    except ValueError:
        raise SvbenchError(f"--temperatures {args.temperatures!r}: expected numbers separated by commas") from None
    if any(t < 0 for t in temperatures) or args.shard_size < 1 or args.batch_size < 1 or args.max_new_tokens < 1 \
            or (args.num_prompts is not None and args.num_prompts < 1):
        raise SvbenchError("temperatures must be >= 0; shard-size, batch-size, max-new-tokens, num-prompts >= 1")
    prompts = shuffled(load_train_prompts(train_prompt_dir(args.prompts_dir)), args.seed)
    if args.num_prompts is not None:
        prompts = prompts[: args.num_prompts]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "threads", "num_prompts")}
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old["settings"] != settings:
            raise SvbenchError(f"{out} was generated with other settings {old['settings']}; use another --out")
    pair_cfg = group_config("pair", args.pair)
    pair = load_pair(pair_cfg, args.dtype, "cpu", drafter_cls=None)
    tok, eos = pair.tokenizer, pair.eos_token_ids
    num_shards = (len(prompts) + args.shard_size - 1) // args.shard_size
    todo = [k for k in range(num_shards) if not (out / f"shard-{k:05d}.jsonl").is_file()]
    bar = tqdm(total=len(todo) * args.shard_size, unit="prompt", desc="generating", file=sys.stderr)
    tokens, start = 0, time.perf_counter()
    for k in todo:
        temperature = temperatures[k % len(temperatures)]
        torch.manual_seed(args.seed * 100003 + k)
        chunk = list(enumerate(prompts[k * args.shard_size:(k + 1) * args.shard_size], start=k * args.shard_size))
        encoded = [(i, p, build_prompt(tok, "chat", [p.text], [])) for i, p in chunk]
        encoded = sorted((e for e in encoded if len(e[2]) <= args.max_prompt_tokens), key=lambda e: len(e[2]))
        rows = []
        for b in range(0, len(encoded), args.batch_size):
            batch = encoded[b:b + args.batch_size]
            answers = generate_batch(pair.target, tok, [e[2] for e in batch], args.max_new_tokens, temperature, eos)
            for (i, p, ids), answer in zip(batch, answers):
                rows.append({"i": i, "source": p.source, "temperature": temperature, "prompt_len": len(ids),
                             "split": "heldout" if is_heldout(p.text, args.heldout_permille) else "train",
                             "ids": ids + answer})
                tokens += len(answer)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
        bar.update(len(chunk) - len(encoded))
        tmp = out / f"shard-{k:05d}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in sorted(rows, key=lambda r: r["i"])))
        tmp.replace(out / f"shard-{k:05d}.jsonl")
        write_manifest(out, settings, len(prompts))
    bar.close()
    write_manifest(out, settings, len(prompts))


def write_manifest(out: Path, settings: dict, num_prompts: int) -> None:
    shards = []
    for shard in sorted(out.glob("shard-*.jsonl")):
        blob = shard.read_bytes()
        rows = [json.loads(x) for x in blob.splitlines()]
        shards.append({"file": shard.name, "sha256": hashlib.sha256(blob).hexdigest(), "rows": len(rows),
                       "heldout": sum(r["split"] == "heldout" for r in rows),
                       "answer_tokens": sum(len(r["ids"]) - r["prompt_len"] for r in rows)})
    manifest = {"settings": settings, "num_prompts": num_prompts, "shards": shards,
                "hash": hashlib.sha256(json.dumps([s["sha256"] for s in shards]).encode()).hexdigest()[:16]}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out / "manifest.json")


if __name__ == "__main__":
    main()
