"""What one training step of a recipe costs on this CPU: steps whose rows' target outputs are computed first
(an epoch's first touch, or rows past feature_cache_tokens, recomputed at every draw) against steps on
cached rows, and a torch.profiler table of two cached steps. The config's pair and first data folder (400 of its
training rows; distinct rows per batch), bf16 autocast, batches as `python -m svbench.train`.

    python experiments/train_step_profile.py [--config eagle] [--batches 4] [override ...]
    e.g. python experiments/train_step_profile.py seq_len=512 ttt_steps=3 mask_outside_vocab=true

Prints seconds per step for both kinds and the profiler's top ops; writes nothing.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from svbench.config import group_config
from svbench.models import load_pair
from svbench.train.__main__ import make_batch, top_tokens
from svbench.train.data import read_shards
from svbench.train.recipes import RECIPES

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="eagle", choices=sorted(RECIPES), help="conf/train/<name>.yaml")
    ap.add_argument("--batches", type=int, default=4, help="distinct batches: each first computed, then cached")
    ap.add_argument("overrides", nargs="*", help="config overrides, as for python -m svbench.train")
    args = ap.parse_args()
    if args.batches < 2:
        ap.error("--batches: an integer >= 2")
    with initialize_config_dir(str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name=args.config, overrides=args.overrides)
    if not isinstance(cfg.get("mask_outside_vocab", False), bool):
        ap.error(f"mask_outside_vocab={cfg.mask_outside_vocab!r}: expected true or false")
    torch.manual_seed(0)
    random.seed(0)
    pair = load_pair(group_config("pair", cfg.pair), "float32", "cpu", drafter_cls=None)
    folder = Path(cfg.data if isinstance(cfg.data, str) else cfg.data[0])  # the config's first data folder
    rows = read_shards(folder if folder.is_absolute() else REPO / folder, split="train")[:400]
    vocab = top_tokens(rows, cfg.reduced_vocab, pair.eos_token_ids) if cfg.reduced_vocab else None
    recipe = RECIPES[cfg.recipe](cfg, pair.target, vocab)
    optimiser = torch.optim.AdamW([p for p in recipe.module.parameters() if p.requires_grad], lr=1e-4)
    drawn = random.sample(range(len(rows)), args.batches * cfg.batch_size)  # distinct rows: a first touch is one
    batches = [drawn[b * cfg.batch_size:(b + 1) * cfg.batch_size] for b in range(args.batches)]

    def step(batch) -> float:
        start = time.perf_counter()
        ids, attention, answer = make_batch([rows[i] for i in batch], cfg.seq_len, pair.tokenizer.pad_token_id or 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
            loss, _, _ = recipe.loss(ids, attention, answer, keys=batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return time.perf_counter() - start

    first = [step(b) for b in batches]  # the target's outputs computed for each row
    cached = [step(b) for b in batches]
    print(f"{cfg.recipe} {' '.join(args.overrides)}: first touch {sum(first) / len(first):.2f} s/step "
          f"({', '.join(f'{s:.2f}' for s in first)}); cached {sum(cached) / len(cached):.2f} s/step "
          f"({', '.join(f'{s:.2f}' for s in cached)}); {torch.get_num_threads()} threads")
    with torch.profiler.profile() as prof:
        for b in batches[:2]:
            step(b)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
